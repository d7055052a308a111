"""Where a run lives: the shard of a run id, and the manifest that fixes a root's shard count."""

from __future__ import annotations

import hashlib
import json
import os

from atomr.errors import AtomrError, RunError

__all__ = ["HASH_SCHEME", "MANIFEST", "ShardUnavailable", "check_manifest", "shard_of"]

MANIFEST = "shards.json"
HASH_SCHEME = "blake2b-64/utf8"


class ShardUnavailable(RunError):
    """A shard's process is down (or never came up); Ray restarts it when it can."""


def shard_of(run_id: str, shards: int) -> int:
    """The shard of ``run_id``: blake2b-64 of its UTF-8 bytes, modulo ``shards``.

    Stable across processes, machines and Python versions (unlike ``hash()``).
    """
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def check_manifest(root: str, shards: int) -> None:
    """Record the shard count of ``root``; refuse another count later."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, MANIFEST)
    want = {"format": 1, "shards": shards, "hash": HASH_SCHEME}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            have = json.load(f)
        if have.get("shards") != shards or have.get("hash") != HASH_SCHEME:
            raise AtomrError(
                f"{root} holds {have.get('shards')} shards placed by {have.get('hash')}; opening it "
                f"with shards={shards} would look for runs on the wrong shards. Open it with "
                f"shards={have.get('shards')} (atomr does not rebalance shards)"
            )
        return
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(want, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
