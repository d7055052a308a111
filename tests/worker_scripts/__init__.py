"""Worker processes for tests/test_workers_processes.py."""
