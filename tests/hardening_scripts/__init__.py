"""Helper scripts of tests/test_hardening_runs.py, run in subprocesses."""
