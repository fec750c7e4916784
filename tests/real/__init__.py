"""Tests with the real Claude Code binary (a package, so that its conftest
does not shadow tests/scripts/conftest.py when both run in one pytest)."""
