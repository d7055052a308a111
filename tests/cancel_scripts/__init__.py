"""Workflows and subprocess scripts for tests/test_cancel.py."""
