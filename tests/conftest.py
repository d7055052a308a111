"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tmp_store_path(tmp_path: Path) -> str:
    """A path for a new LMDB store (not created yet, so it gets mode 0700)."""
    return str(tmp_path / "store")
