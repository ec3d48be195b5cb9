"""``python -m bbattack``: the command line."""

from .cli import entry

entry()
