"""Attacks on labels (top-k labels with or without scores: PI, LO): one file each, found by the
registry."""
