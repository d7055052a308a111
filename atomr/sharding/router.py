"""The router: :class:`ShardedRuntime` sends each request to the shard that owns the run."""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from atomr._specs import split_spec
from atomr.errors import AtomrError, ResultTimeout, RuntimeClosed
from atomr.ray import _import_ray, connect
from atomr.sharding.host import ShardHost
from atomr.sharding.placement import ShardUnavailable, check_manifest, shard_of
from atomr.sharding.wire import first_line, import_exc
from atomr.types import Checkpoint, Command, Outcome, StateView

__all__ = ["ShardedRunHandle", "ShardedRuntime"]

_DEFAULT_TIMEOUT = 30.0
_SLACK = 30.0  # extra seconds for a Ray round trip beyond a server-side wait


class ShardedRunHandle:
    """A run started or resumed on a shard: wait for its outcome."""

    def __init__(self, router: ShardedRuntime, workflow_id: str, run_id: str, ticket: int | None) -> None:
        self.router = router
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.shard = router.shard_of(run_id)
        self._ticket = ticket
        self._outcome: Outcome | None = None

    def __repr__(self) -> str:
        return f"ShardedRunHandle({self.workflow_id!r}, {self.run_id!r}, shard={self.shard})"

    def result(self, timeout: float | None = _DEFAULT_TIMEOUT) -> Outcome:
        """Wait for the outcome (Done | Paused | Failed). Raises ResultTimeout,
        the request's error when the shard refused it, or ShardUnavailable."""
        if self._outcome is not None:
            return self._outcome
        t = _DEFAULT_TIMEOUT if timeout is None else timeout
        out = self.router._call(self.shard, "wait", (self._ticket, self.workflow_id, self.run_id), t,
                                retry=True)
        if out is None:
            raise ResultTimeout(
                f"run {self.workflow_id}/{self.run_id} (shard {self.shard}) has no outcome after "
                f"{t}s; it is still running: wait longer or inspect it with get_state()"
            )
        self._outcome = out
        return out  # type: ignore[no-any-return]


class ShardedRuntime:
    """A router over ``shards`` runtimes, each on its own store under ``root``.

    Deprecated: each shard owns its own LMDB file, so a shard cannot fail over
    to another machine, and on one machine it is slower than one process.
    Run workers on a shared store instead (``atomr worker`` / ``Runtime`` on a
    :class:`~atomr.SqliteStore` or :class:`~atomr.PostgresStore`; Ray may place
    those worker processes). It warns once (DeprecationWarning) when built.

    ``workflows``: ``"module:attr"`` specs every shard imports. ``durability``,
    ``step_workers``, ``timeout``: as for :class:`~atomr.Runtime` (per shard).
    ``step_executor``: ``"local"`` (steps run in the shard's process) or
    ``"ray"`` (each shard runs its steps as Ray tasks: CPU-bound steps scale).
    ``store_options``: keyword arguments of each shard's LmdbStore.
    ``max_restarts``: how often Ray restarts a crashed shard process.
    ``name``: name the shard actors ``{name}-shard-{i}`` (so that
    :meth:`attach` finds them from another driver of the same Ray namespace).
    ``address``/``num_cpus``/other keywords: how to reach Ray (as RayExecutor);
    a Ray started here is shut down by :meth:`close`.
    """

    def __init__(
        self,
        shards: int,
        root: str | os.PathLike[str],
        workflows: Iterable[str],
        *,
        durability: str = "sync",
        step_workers: int = 4,
        step_executor: str = "local",
        store_options: Mapping[str, Any] | None = None,
        max_restarts: int = 3,
        actor_options: Mapping[str, Any] | None = None,
        name: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        address: str | None = None,
        num_cpus: int | None = None,
        **ray_init_kwargs: Any,
    ) -> None:
        warnings.warn("ShardedRuntime is deprecated: its shards cannot fail over and on one machine it is slower "
                      "than one process; run workers on a shared SqliteStore or PostgresStore instead "
                      "(atomr worker, Runtime(store, worker_id=...))", DeprecationWarning, stacklevel=2)
        if not isinstance(shards, int) or shards < 1:
            raise AtomrError(f"shards must be an int >= 1, got {shards!r}")
        specs = [workflows] if isinstance(workflows, str) else list(workflows)
        for s in specs:
            split_spec(s)  # a WorkflowSpecError here rather than in every shard
        if step_executor not in ("local", "ray"):
            raise AtomrError(f"step_executor must be 'local' or 'ray', got {step_executor!r}")
        self.shards = shards
        self.root = os.path.abspath(os.fspath(root))
        self.timeout = timeout
        self._owned = True
        self._closed = False
        check_manifest(self.root, shards)

        ray = _import_ray()
        self._owns_ray = connect(address, num_cpus, ray_init_kwargs)
        options: dict[str, Any] = {"max_restarts": max_restarts, "max_task_retries": 0,
                                   "num_cpus": 0, "max_concurrency": 1000}
        options.update(actor_options or {})
        cls = ray.remote(ShardHost)
        self.actors: list[Any] = []
        try:
            for i in range(shards):
                opts = dict(options)
                if name is not None:
                    opts["name"] = f"{name}-shard-{i}"
                self.actors.append(cls.options(**opts).remote(
                    i, os.path.join(self.root, f"shard-{i}"), specs, durability, step_workers,
                    step_executor, dict(store_options or {}), timeout))
            self.info = self._ping(max(timeout, 60.0))
        except BaseException:
            self._kill_all()
            if self._owns_ray:
                ray.shutdown()
            raise

    @classmethod
    def attach(cls, name: str, shards: int, *, timeout: float = _DEFAULT_TIMEOUT,
               namespace: str | None = None) -> ShardedRuntime:
        """A router over the shard actors a ShardedRuntime started with ``name``
        (this Ray must be initialised, in the same namespace). ``close()`` of an
        attached router leaves the shards running."""
        ray = _import_ray()
        self = cls.__new__(cls)
        self.shards = shards
        self.root = ""
        self.timeout = timeout
        self._owned = False
        self._owns_ray = False
        self._closed = False
        try:
            self.actors = [ray.get_actor(f"{name}-shard-{i}", namespace=namespace) for i in range(shards)]
        except ValueError as exc:
            raise ShardUnavailable(f"no shard actors named {name!r}-shard-i: {exc}") from exc
        self.info = self._ping(timeout)
        return self

    def _ping(self, timeout: float) -> list[dict[str, Any]]:
        import ray  # optional extra (atomr[ray]): imported on use

        try:
            got = ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError as exc:
            raise ShardUnavailable(f"the shards did not come up within {timeout}s") from exc
        except ray.exceptions.RayActorError as exc:
            lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
            cause = lines[-1] if lines else type(exc).__name__
            raise ShardUnavailable(f"a shard failed to start: {cause}") from exc
        return [v for _, v in got]

    def __repr__(self) -> str:
        return f"ShardedRuntime(shards={self.shards}, root={self.root!r})"

    def __enter__(self) -> ShardedRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routing -------------------------------------------------------------------

    def shard_of(self, run_id: str) -> int:
        """The index of the shard that owns ``run_id``."""
        if not isinstance(run_id, str) or not run_id:
            raise AtomrError(f"run_id must be a non-empty string, got {run_id!r}")
        return shard_of(run_id, self.shards)

    def _call(self, shard: int, method: str, args: tuple[Any, ...], timeout: float | None,
              retry: bool = False) -> Any:
        """Call ``method`` on a shard; unwrap its answer. ``retry``: the call is
        idempotent, so a shard that died under it is asked again (after Ray
        restarts it) until ``timeout``."""
        import ray  # optional extra (atomr[ray]): imported on use

        if self._closed:
            raise RuntimeClosed("this ShardedRuntime is closed; create a new one")
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            call_args = args
            if method == "wait":
                call_args = (*args[:3], left)
            try:
                ok, value = ray.get(getattr(self.actors[shard], method).remote(*call_args),
                                    timeout=left + _SLACK)
            except ray.exceptions.GetTimeoutError as exc:
                raise ResultTimeout(f"shard {shard} did not answer {method} within {t}s") from exc
            except ray.exceptions.RayActorError as exc:
                if retry and time.monotonic() < deadline:
                    time.sleep(0.25)
                    continue
                raise ShardUnavailable(
                    f"shard {shard} is unavailable ({first_line(exc)}); "
                    + ("" if retry else "the request may or may not have been applied: check get_state(); ")
                    + "Ray restarts a crashed shard up to max_restarts times"
                ) from exc
            if not ok:
                raise import_exc(value)
            return value

    # -- runs ------------------------------------------------------------------------

    def start(self, workflow_id: str, input: Mapping[str, Any] | None = None, run_id: str | None = None,
              *, meta: Mapping[str, Any] | None = None, timeout: float | None = None) -> ShardedRunHandle:
        """Start a run on its shard (as :meth:`atomr.Runtime.start`)."""
        return self.start_many(workflow_id, [input], [run_id] if run_id is not None else None,
                               meta=meta, timeout=timeout)[0]

    def start_many(self, workflow_id: str, inputs: Iterable[Mapping[str, Any] | None],
                   run_ids: Iterable[str] | None = None, *, meta: Mapping[str, Any] | None = None,
                   timeout: float | None = None) -> list[ShardedRunHandle]:
        """Start several runs; each shard gets its runs in one call (in parallel)."""
        import ray  # optional extra (atomr[ray]): imported on use

        datas = [dict(i) if i is not None else None for i in inputs]
        ids = list(run_ids) if run_ids is not None else [uuid.uuid4().hex[:16] for _ in datas]
        if len(ids) != len(datas):
            raise AtomrError(f"{len(datas)} inputs but {len(ids)} run ids; pass one run id per input")
        by_shard: dict[int, list[int]] = {}
        for k, rid in enumerate(ids):
            by_shard.setdefault(self.shard_of(rid), []).append(k)
        t = self.timeout if timeout is None else timeout
        refs = {s: self.actors[s].start_many.remote(
                    workflow_id, [datas[k] for k in ks], [ids[k] for k in ks],
                    dict(meta) if meta is not None else None, timeout)
                for s, ks in by_shard.items()}
        handles: list[ShardedRunHandle | None] = [None] * len(ids)
        error: BaseException | None = None
        for s, ref in refs.items():
            try:
                ok, value = ray.get(ref, timeout=t + _SLACK)
            except ray.exceptions.GetTimeoutError:
                error = error or ResultTimeout(f"shard {s} did not answer start within {t}s")
                continue
            except ray.exceptions.RayActorError as exc:
                error = error or ShardUnavailable(
                    f"shard {s} is unavailable ({first_line(exc)}); its runs may or may not have "
                    "started: check get_state()")
                continue
            if not ok:
                error = error or import_exc(value)
                continue
            for k, ticket in zip(by_shard[s], value):
                handles[k] = ShardedRunHandle(self, workflow_id, ids[k], ticket)
        if error is not None:
            raise error
        return handles  # type: ignore[return-value]

    def resume(self, workflow_id: str, run_id: str, command: Command | None = None, *,
               timeout: float | None = None) -> ShardedRunHandle:
        """Resume a paused or failed run on its shard (as :meth:`atomr.Runtime.resume`)."""
        command = command if command is not None else Command()
        ticket = self._call(self.shard_of(run_id), "resume", (workflow_id, run_id, command, timeout),
                            timeout)
        return ShardedRunHandle(self, workflow_id, run_id, ticket)

    def handle(self, workflow_id: str, run_id: str) -> ShardedRunHandle:
        """A handle on an existing run: ``result()`` waits for its next outcome."""
        return ShardedRunHandle(self, workflow_id, run_id, None)

    def recover(self, workflow_ids: Iterable[str] | None = None) -> list[ShardedRunHandle]:
        """Carry on every run left "running" in any shard's store."""
        wanted = list(workflow_ids) if workflow_ids is not None else None
        out = []
        for s in range(self.shards):
            for wid, rid, ticket in self._call(s, "recover", (wanted,), None):
                out.append(ShardedRunHandle(self, wid, rid, ticket))
        return out

    # -- reads -------------------------------------------------------------------------

    def get_state(self, workflow_id: str, run_id: str) -> StateView:
        return self._call(self.shard_of(run_id), "get_state", (workflow_id, run_id), None, retry=True)  # type: ignore[no-any-return]

    def history(self, workflow_id: str, run_id: str) -> list[Checkpoint]:
        return self._call(self.shard_of(run_id), "history", (workflow_id, run_id), None, retry=True)  # type: ignore[no-any-return]

    def runs(self, status: str | None = None, workflow_id: str | None = None, *,
             shard: int | None = None) -> list[Any]:
        """Run summaries of every shard (or of ``shard``), sorted by (workflow_id, run_id)."""
        shards = range(self.shards) if shard is None else [shard]
        out = []
        for s in shards:
            out.extend(self._call(s, "runs", (status, workflow_id), None, retry=True))
        out.sort(key=lambda r: (r.workflow_id, r.run_id))
        return out

    def flush(self) -> None:
        for s in range(self.shards):
            self._call(s, "flush", (), None, retry=True)

    def live_runs(self) -> int:
        return sum(self._call(s, "live_runs", (), None, retry=True) for s in range(self.shards))

    # -- lifecycle -----------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Close every shard runtime and stop the shard actors (and a Ray started here).

        An attached router only forgets the shards."""
        if self._closed:
            return
        self._closed = True
        if not self._owned:
            return
        import ray  # optional extra (atomr[ray]): imported on use

        refs = []
        for a in self.actors:
            try:
                refs.append(a.close.remote())
            except Exception:  # noqa: BLE001
                pass
        try:
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:  # noqa: BLE001 - a dead shard has nothing to close
            pass
        self._kill_all()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def _kill_all(self) -> None:
        import ray  # optional extra (atomr[ray]): imported on use

        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
