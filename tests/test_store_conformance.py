"""Both store backends pass the conformance suite shipped in atomr.testing."""

from __future__ import annotations

from pathlib import Path

from atomr import LmdbStore, MemoryStore
from atomr.store.base import Store
from atomr.testing import StoreConformance


class TestMemoryStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore(snapshot_every=2)


class TestLmdbStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> Store:
        return LmdbStore(tmp_path / "store", map_size=1 << 20, fsync="none")

    def reopen_store(self, store: Store, tmp_path: Path) -> Store:
        store.close()
        return LmdbStore(tmp_path / "store", map_size=1 << 20, fsync="none")


class TestLmdbStoreSyncedTinyMap(StoreConformance):
    """Durable commits and a map that has to grow during the suite."""

    def make_store(self, tmp_path: Path) -> Store:
        return LmdbStore(tmp_path / "store", map_size=64 * 1024, max_map_size=64 << 20)

    def reopen_store(self, store: Store, tmp_path: Path) -> Store:
        store.close()
        return LmdbStore(tmp_path / "store", map_size=64 * 1024, max_map_size=64 << 20)
