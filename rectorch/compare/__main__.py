"""``python -m rectorch.compare``."""

from rectorch.compare.cli import entry

entry()
