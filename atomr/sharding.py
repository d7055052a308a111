"""Sharding: many runtimes, each owning a shard of run ids in its own store, on Ray actors.

Needs the ``ray`` extra. See ``docs/sharding.md`` for the design; in short::

    from atomr.sharding import ShardedRuntime

    with ShardedRuntime(shards=3, root="data/", workflows=["myapp.flows:orders"]) as srt:
        h = srt.start("orders", {"n": 1}, run_id="r1")
        out = h.result(timeout=30)            # Done | Paused | Failed, as with Runtime
        srt.resume("orders", "r1", Command(resume="ok")).result(timeout=30)

* Shard ``i`` is a Ray actor (its own process) hosting a :class:`~atomr.Runtime`
  on ``LmdbStore(root/shard-i)``. It imports the workflows from their
  ``"module:attr"`` specs (``attr``: a Workflow, or a function returning one).
* A run lives on shard ``shard_of(run_id)``: a stable hash (blake2b) of the
  run id modulo the shard count. Routing is a pure function, so this object is
  stateless and any number of them (in any process) route the same way.
* The shard count of a root is fixed: it is written to ``root/shards.json`` and
  opening the root with another count is refused (rebalancing is not done).
* A shard whose process dies is restarted by Ray (``max_restarts``); its store
  is reopened and the runs it was executing are carried on (``recover()``).
  A waiting ``result()`` keeps waiting across the restart.

Threads: the methods run in the caller's thread and are thread-safe; every wait
has a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import importlib
import itertools
import json
import os
import pickle
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from atomr.errors import AtomrError, ResultTimeout, RunError
from atomr.types import Checkpoint, Command, Done, Failed, Outcome, Paused, StateView

__all__ = ["ShardedRuntime", "ShardedRunHandle", "ShardUnavailable", "shard_of", "load_workflow"]

MANIFEST = "shards.json"
HASH_SCHEME = "blake2b-64/utf8"
_DEFAULT_TIMEOUT = 30.0
_SLACK = 30.0  # extra seconds for a Ray round trip beyond a server-side wait


class ShardUnavailable(RunError):
    """A shard's process is down (or never came up); Ray restarts it when it can."""


def shard_of(run_id: str, shards: int) -> int:
    """The shard of ``run_id``: blake2b-64 of its UTF-8 bytes, modulo ``shards``.

    Stable across processes, machines and Python versions (unlike ``hash()``).
    """
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def load_workflow(spec: str) -> Any:
    """Import the Workflow named by ``"package.module:attr"`` (``attr`` may be
    dotted, and may be a function returning the Workflow)."""
    from atomr.workflow import Workflow

    module, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module or not attr:
        raise AtomrError(f"workflow spec must be 'package.module:attr', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise AtomrError(
            f"cannot load workflow {spec!r}: {exc}; the module must be importable in every "
            "shard process (install it, or put it on PYTHONPATH / a Ray runtime_env)"
        ) from exc
    if not isinstance(obj, Workflow) and callable(obj):
        obj = obj()
    if not isinstance(obj, Workflow):
        raise AtomrError(f"workflow spec {spec!r} names a {type(obj).__name__}, not a Workflow")
    return obj


# --- exceptions across processes ----------------------------------------------


@dataclass(frozen=True)
class _ExcInfo:
    """An exception that does not survive pickling (its __init__ takes other args)."""

    module: str
    qualname: str
    message: str
    state: dict[str, Any] = field(default_factory=dict)


def _export_exc(exc: BaseException) -> Any:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - send it piecewise
        pass
    state = {}
    for k, v in getattr(exc, "__dict__", {}).items():
        try:
            pickle.dumps(v)
        except Exception:  # noqa: BLE001
            continue
        state[k] = v
    cls = type(exc)
    return _ExcInfo(cls.__module__, cls.__qualname__, str(exc), state)


def _import_exc(info: Any) -> BaseException:
    if isinstance(info, BaseException):
        return info
    cls: Any = None
    try:
        cls = importlib.import_module(info.module)
        for part in info.qualname.split("."):
            cls = getattr(cls, part)
    except Exception:  # noqa: BLE001
        cls = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        exc = cls.__new__(cls)
        exc.args = (info.message,)
        try:
            exc.__dict__.update(info.state)
        except AttributeError:
            pass
        return exc  # type: ignore[no-any-return]
    return AtomrError(f"{info.qualname}: {info.message}")


def _outcome_from_view(v: StateView) -> Outcome | None:
    if v.status == "done":
        return Done(v.workflow_id, v.run_id, dict(v.values))
    if v.status == "paused":
        return Paused(v.workflow_id, v.run_id, v.super_step, v.pause_reason or "",
                      list(v.interrupts), list(v.next))
    if v.status == "failed":
        step, etype, message = v.error if v.error else (None, "RunError", "")
        return Failed(v.workflow_id, v.run_id, step, v.super_step, etype, message)
    return None


# --- the shard actor --------------------------------------------------------------


class _ShardHost:
    """Hosts one Runtime on its own LmdbStore (runs as an async Ray actor).

    Blocking Runtime calls run on a small thread pool; waits for outcomes poll
    handles from the event loop, so any number of waiters cost no thread.
    Every method returns ``(True, value)`` or ``(False, exported exception)``.
    """

    def __init__(self, index: int, path: str, specs: list[str], durability: str,
                 step_workers: int, step_executor: str, store_options: dict[str, Any],
                 timeout: float) -> None:
        from atomr.runtime import Runtime
        from atomr.store.lmdb import LmdbStore

        executor = None
        if step_executor == "ray":
            from atomr.ray import RayExecutor

            executor = RayExecutor()
        self.index = index
        self.rt = Runtime(store=LmdbStore(path, **store_options), durability=durability,
                          step_workers=step_workers, executor=executor, timeout=timeout)
        for spec in specs:
            self.rt.register(load_workflow(spec))
        self._pool = cf.ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"atomr-shard{index}")
        self._tickets = itertools.count(1)
        self._handles: dict[int, Any] = {}
        self._latest: dict[tuple[str, str], int] = {}
        # a restarted shard carries on what its previous process was executing
        self.recovered = [self._keep(h) for h in self.rt.recover()]

    def _keep(self, handle: Any) -> int:
        t = next(self._tickets)
        self._handles[t] = handle
        self._latest[(handle.workflow_id, handle.run_id)] = t
        return t

    async def _call(self, fn: Any, *args: Any) -> tuple[bool, Any]:
        try:
            return True, await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller
            return False, _export_exc(exc)

    async def ping(self) -> tuple[bool, Any]:
        return True, {"index": self.index, "pid": os.getpid(), "workflows": sorted(self.rt.workflows),
                      "recovered": len(self.recovered)}

    async def start_many(self, workflow_id: str, inputs: list[Any], run_ids: list[str],
                         meta: Any, timeout: float | None) -> tuple[bool, Any]:
        def go() -> list[int]:
            hs = self.rt.start_many(workflow_id, inputs, run_ids, meta=meta, timeout=timeout)
            return [self._keep(h) for h in hs]

        return await self._call(go)

    async def resume(self, workflow_id: str, run_id: str, command: Command,
                     timeout: float | None) -> tuple[bool, Any]:
        return await self._call(lambda: self._keep(self.rt.resume(workflow_id, run_id, command, timeout=timeout)))

    async def recover(self, workflow_ids: list[str] | None) -> tuple[bool, Any]:
        def go() -> list[tuple[str, str, int]]:
            return [(h.workflow_id, h.run_id, self._keep(h)) for h in self.rt.recover(workflow_ids)]

        return await self._call(go)

    async def wait(self, ticket: int | None, workflow_id: str, run_id: str, timeout: float) -> tuple[bool, Any]:
        """The outcome of the run (None when it has none within ``timeout``)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        key = (workflow_id, run_id)
        h = self._handles.get(ticket) if ticket is not None else None
        if h is None or (h.workflow_id, h.run_id) != key:
            # e.g. asked again after this shard restarted: its tickets start over
            ticket = self._latest.get(key)
            h = self._handles.get(ticket) if ticket is not None else None
        delay = 0.002
        if h is not None:
            while not h.done():
                if time.monotonic() >= deadline:
                    return True, None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            self._handles.pop(ticket, None)
            if self._latest.get(key) == ticket:
                del self._latest[key]
            try:
                return True, h.result(timeout=0)
            except BaseException as exc:  # noqa: BLE001 - a rejection
                return False, _export_exc(exc)
        while True:  # no handle here: the run's outcome is in the store
            ok, view = await self._call(self.rt.get_state, workflow_id, run_id)
            if not ok:
                return ok, view
            out = _outcome_from_view(view)
            if out is not None or time.monotonic() >= deadline:
                return True, out
            await asyncio.sleep(0.05)

    async def get_state(self, workflow_id: str, run_id: str) -> tuple[bool, Any]:
        return await self._call(self.rt.get_state, workflow_id, run_id)

    async def history(self, workflow_id: str, run_id: str) -> tuple[bool, Any]:
        return await self._call(self.rt.history, workflow_id, run_id)

    async def runs(self, status: str | None, workflow_id: str | None) -> tuple[bool, Any]:
        return await self._call(self.rt.runs, status, workflow_id)

    async def flush(self) -> tuple[bool, Any]:
        return await self._call(self.rt.flush)

    async def live_runs(self) -> tuple[bool, Any]:
        return True, self.rt.live_runs()

    async def close(self) -> tuple[bool, Any]:
        out = await self._call(self.rt.close)
        self._pool.shutdown(wait=False)
        return out


# --- the router -------------------------------------------------------------------


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
        if not isinstance(shards, int) or shards < 1:
            raise AtomrError(f"shards must be an int >= 1, got {shards!r}")
        specs = [workflows] if isinstance(workflows, str) else list(workflows)
        for s in specs:
            if not isinstance(s, str) or ":" not in s:
                raise AtomrError(f"workflows are 'package.module:attr' specs, got {s!r}")
        if step_executor not in ("local", "ray"):
            raise AtomrError(f"step_executor must be 'local' or 'ray', got {step_executor!r}")
        self.shards = shards
        self.root = os.path.abspath(os.fspath(root))
        self.timeout = timeout
        self._owned = True
        self._closed = False
        _check_manifest(self.root, shards)

        from atomr.ray import _import_ray, connect

        ray = _import_ray()
        self._owns_ray = connect(address, num_cpus, ray_init_kwargs)
        options: dict[str, Any] = {"max_restarts": max_restarts, "max_task_retries": 0,
                                   "num_cpus": 0, "max_concurrency": 1000}
        options.update(actor_options or {})
        cls = ray.remote(_ShardHost)
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
        from atomr.ray import _import_ray

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
        import ray

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
        import ray

        if self._closed:
            from atomr.errors import RuntimeClosed

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
                    f"shard {shard} is unavailable ({_first_line(exc)}); "
                    + ("" if retry else "the request may or may not have been applied: check get_state(); ")
                    + "Ray restarts a crashed shard up to max_restarts times"
                ) from exc
            if not ok:
                raise _import_exc(value)
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
        import ray

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
                    f"shard {s} is unavailable ({_first_line(exc)}); its runs may or may not have "
                    "started: check get_state()")
                continue
            if not ok:
                error = error or _import_exc(value)
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
        import ray

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
        import ray

        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


def _check_manifest(root: str, shards: int) -> None:
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


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
