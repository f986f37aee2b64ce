"""Helpers of ``tests/test_readme.py``: read README.md's commands, run its shell blocks, dry-run its inline commands."""
