"""Score-based attacks (full scores, QL): one file each, found by the registry."""
