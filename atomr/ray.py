"""Run steps on Ray: :class:`RayExecutor` (needs the ``ray`` extra: ``pip install 'atomr[ray]'``).

::

    from atomr.ray import RayExecutor

    with Runtime(store=LmdbStore("data/"), executor=RayExecutor()) as rt:
        ...

The run actors, the checkpointer and the store stay in this process; only the
user code of a step (a step function, a Map element, a Loop body) runs as a
Ray task. Routers, loop predicates and the driving of a Subgraph stay with the
run actor. Seen from outside, a run behaves as with local execution:

* the same writes, interrupts, resumes and ``Failed.error_type`` (the step's
  own exception class name: ``execute_sync`` runs remotely and turns every
  outcome into a :class:`~atomr.messages.StepDone` there);
* Ray's own retries are off (``max_retries=0``, ``retry_exceptions=False``):
  only the workflow's :class:`~atomr.RetryPolicy` retries, so a side-effecting
  step never runs more often than it would locally;
* a worker that dies under a step (segfault, ``os._exit``, OOM kill, lost
  node) is a failed, retryable attempt with error type ``StepCrashed`` whose
  message names the crash;
* a step over ``step_timeout_s`` is cancelled (``ray.cancel(force=True)``
  kills its worker) and is a failed attempt ``StepTimeout``.

Steps receive a *copy* of the state under Ray (it is pickled to the worker).
Steps must never mutate the state they are given, locally or on Ray: return
writes instead. A step function, its closure and the channel values it reads
must be picklable (cloudpickle); module-level functions must be importable on
the Ray workers (install your package there or use a Ray ``runtime_env``).
Classes registered with :func:`atomr.codec.register` travel with each step
(by reference: they must be importable on the workers, as the step functions)
and are registered in the worker before the step runs, which encodes its
writes there.

Threads: ``submit`` and ``abandon`` are called by run actors (each from its own
thread) and return at once. Results come back through ``ObjectRef.future()``
callbacks, which Ray runs on its own thread; they only tell the run actor.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from atomr import _trace, _usertypes
from atomr._hooks import logger
from atomr.actors.step import execute_sync
from atomr.errors import AtomrError
from atomr.graph.view import TypedState
from atomr.messages import ERROR, Execute, StepDone

__all__ = ["RayExecutor", "ray_available"]

log = logger("atomr.ray")

#: Ray task options that only atomr may set (Ray must never retry a step itself).
_FIXED_OPTIONS = {"max_retries": 0, "retry_exceptions": False}


def ray_available() -> bool:
    """True when the ``ray`` package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise AtomrError(
            "atomr.ray needs Ray: install the extra with  pip install 'atomr[ray]'  "
            f"(import failed: {exc})"
        ) from exc
    return ray


def connect(address: str | None, num_cpus: int | None, init_kwargs: dict[str, Any]) -> bool:
    """Make sure this process is connected to Ray; True when this call did ``ray.init``.

    * a Ray already initialised in this process is used as it is (Ray allows
      one connection per process; ``address`` is then not consulted);
    * ``address="auto"`` / ``"ray://host:10001"`` / ``"host:6379"``: connect to it;
    * ``address=None``: connect to ``$RAY_ADDRESS`` when set, else start a local
      Ray with ``num_cpus`` CPUs (no dashboard, worker logs not forwarded).
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs = dict(init_kwargs)
    target = address if address is not None else (os.environ.get("RAY_ADDRESS") or None)
    if target is not None:
        if num_cpus is not None:
            raise AtomrError(
                f"num_cpus={num_cpus} only applies to a local Ray started by atomr, but this "
                f"connects to the Ray cluster at {target!r}; size the cluster instead (or unset "
                "RAY_ADDRESS and pass address=None to start a local Ray)"
            )
        ray.init(address=target, **kwargs)
    else:
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", False)
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


def _run_step(msg: Execute, types: tuple[Any, ...] = (), trace: dict[str, str] | None = None) -> StepDone:
    """The Ray task: run one step in the worker. Never raises (see execute_sync).
    ``types``: the sender's registered codec types (the worker encodes the step's
    writes); ``trace``: the W3C context of the step's span (see atomr.otel)."""
    if types:
        _usertypes.adopt(types)
    if trace is not None:
        return _trace.remote(trace, execute_sync, msg)
    return execute_sync(msg)


def _crashed(msg: Execute, exc: BaseException) -> StepDone:
    """A failed, retryable attempt for a step whose Ray task was lost."""
    detail = str(exc).strip().splitlines()
    first = detail[0] if detail else ""
    return StepDone(
        msg.token, msg.step, msg.attempt, ERROR, error_type="StepCrashed",
        message=(f"step {msg.step!r} (attempt {msg.attempt}) was lost on Ray: "
                 f"{type(exc).__name__}: {first}".rstrip(": ")),
        retryable=True,
    )


def _tell(ref: Any, done: StepDone) -> None:
    try:
        ref.tell(done)
    except Exception:  # noqa: BLE001 - the run stopped: nobody is waiting
        pass


class _Pending:
    __slots__ = ("key", "ref", "msg", "reply_to", "cancelled")

    def __init__(self, key: int, ref: Any, msg: Execute, reply_to: Any) -> None:
        self.key = key
        self.ref = ref
        self.msg = msg
        self.reply_to = reply_to
        self.cancelled = False


class RayExecutor:
    """Runs steps as Ray tasks; pass it as ``Runtime(..., executor=RayExecutor())``.

    ``address``: None (an initialised Ray as it is, else ``$RAY_ADDRESS``, else
    a new local Ray), ``"auto"``, ``"ray://host:10001"``... (see :func:`connect`).
    ``num_cpus``: CPUs of a local Ray started here. ``task_options``: extra
    ``.options()`` of every step task (``num_cpus``, ``resources``,
    ``runtime_env``...; ``max_retries``/``retry_exceptions`` are fixed off).
    Other keyword arguments go to ``ray.init``.

    When this executor did ``ray.init`` it also does ``ray.shutdown`` in
    :meth:`close` (which ``Runtime.close`` calls): a local Ray it started stops.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 task_options: dict[str, Any] | None = None, **ray_init_kwargs: Any) -> None:
        options = dict(task_options or {})
        fixed = sorted(set(options) & set(_FIXED_OPTIONS))
        if fixed:
            raise AtomrError(
                f"RayExecutor task_options may not set {', '.join(fixed)}: Ray never retries a "
                "step; use the workflow's RetryPolicy"
            )
        self.address = address
        self.num_cpus = num_cpus
        self.task_options = {**options, **_FIXED_OPTIONS}
        self.ray_init_kwargs = ray_init_kwargs
        self._lock = threading.Lock()
        # token -> attempts. Step tokens are unique in the process (a run
        # actor's turns may run on any dispatcher thread).
        self._pending: dict[int, list[_Pending]] = {}
        self._remote: Any = None
        self._owns_ray = False
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, pending={self.pending()})"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise AtomrError("this RayExecutor is closed; create a new one")
            ray = _import_ray()
            self._owns_ray = connect(self.address, self.num_cpus, self.ray_init_kwargs)
            self._remote = ray.remote(**self.task_options)(_run_step)
            self._started = True

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the steps still running and, if ``start`` did ``ray.init``, shut Ray down."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
            pending = [p for ps in self._pending.values() for p in ps]
            self._pending.clear()
        if not started:
            return
        import ray

        for p in pending:
            p.cancelled = True
            try:
                ray.cancel(p.ref, force=False)
            except Exception:  # noqa: BLE001 - best effort: the task may be gone already
                pass
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    def pending(self) -> int:
        """How many step attempts are on Ray now."""
        with self._lock:
            return sum(len(v) for v in self._pending.values())

    # -- executor interface (called by run actors) -----------------------------

    def submit(self, msg: Execute) -> None:
        """Send one step to Ray; its StepDone is told to ``msg.reply_to`` later."""
        reply_to = msg.reply_to
        if self._closed or not self._started:
            _tell(reply_to, StepDone(
                msg.token, msg.step, msg.attempt, ERROR, error_type="RuntimeClosed",
                message="the RayExecutor is not running (closed or never started)"))
            return
        try:
            state = msg.state if isinstance(msg.state, TypedState) else dict(msg.state)  # a view pickles itself
            remote_msg = msg._replace(reply_to=None, state=state, emit=None, cancelled=None)
            carrier = _trace.carrier(msg.token) if _trace.enabled else None
            ref = self._remote.options(name=f"atomr:{msg.workflow_id}/{msg.step}").remote(
                remote_msg, _usertypes.snapshot(), carrier)
        except Exception as exc:  # noqa: BLE001 - e.g. the step or its input cannot be pickled
            _tell(reply_to, StepDone(
                msg.token, msg.step, msg.attempt, ERROR, error_type=type(exc).__name__,
                message=(f"step {msg.step!r} could not be sent to Ray: {exc}; under RayExecutor a "
                         "step function, its closure and the state must be picklable"),
                retryable=False))
            return
        key = msg.token
        entry = _Pending(key, ref, msg, reply_to)
        with self._lock:
            self._pending.setdefault(key, []).append(entry)
        try:
            fut = ref.future()
            fut.add_done_callback(lambda f, e=entry: self._completed(e, f))
        except Exception as exc:  # noqa: BLE001 - Ray is going away under us
            if self._take(entry):
                _tell(reply_to, _crashed(msg, exc))

    def abandon(self, token: int) -> None:
        """The step overran ``step_timeout_s``: cancel its task (killing its worker)."""
        key = token
        with self._lock:
            entries = self._pending.get(key)
            if not entries:
                return
            entry = entries.pop()  # the latest attempt under this key is the one timed out
            if not entries:
                del self._pending[key]
        entry.cancelled = True
        try:
            import ray

            ray.cancel(entry.ref, force=True)
        except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
            pass

    # -- results (Ray's callback thread) ---------------------------------------

    def _take(self, entry: _Pending) -> bool:
        with self._lock:
            entries = self._pending.get(entry.key)
            if not entries:
                return False
            for i, e in enumerate(entries):
                if e is entry:
                    del entries[i]
                    if not entries:
                        del self._pending[entry.key]
                    return True
            return False

    def _completed(self, entry: _Pending, fut: Any) -> None:
        try:
            if not self._take(entry) or entry.cancelled:
                return  # abandoned (timed out) or the executor closed
            try:
                done = fut.result(timeout=0)
            except BaseException as exc:  # noqa: BLE001 - every Ray failure is a lost attempt
                done = _crashed(entry.msg, exc)
            else:
                if not isinstance(done, StepDone):
                    done = _crashed(entry.msg, TypeError(
                        f"the Ray task returned {type(done).__name__}, not a StepDone"))
            _tell(entry.reply_to, done)
        except BaseException:  # noqa: BLE001 - never raise into Ray's thread
            log.exception("RayExecutor: could not report step %r", entry.msg.step)
