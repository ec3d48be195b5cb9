"""Surrogate-guided attacks (transfer, GFCS) and what they share: one file each, found by the
registry."""
