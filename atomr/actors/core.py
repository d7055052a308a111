"""What the actors of one Runtime share (set up and torn down by the Runtime)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomr.actors.dispatcher import Dispatcher
    from atomr.actors.scheduler import Scheduler
    from atomr.actors.supervisor import Supervisor
    from atomr.store.base import Store
    from atomr.workflow import Workflow

__all__ = ["Core"]


@dataclass
class Core:
    store: Store
    #: the checkpointer's ActorRef, or None when the store takes writes from any
    #: thread (MemoryStore): run actors then commit inline, one hop fewer.
    checkpointer: Any
    executor: Any
    scheduler: Scheduler
    supervisor: Supervisor
    durability: str
    #: the threads that run the turns of the run actors
    dispatcher: Dispatcher
    #: lend a layer of one sync step (no timeout, no limit) a dispatcher thread
    #: (it runs there right after the run's turn) instead of the step pool
    inline: bool = True
    workflows: dict[str, Workflow] = field(default_factory=dict)
    #: wakes sleeping runs (set by the Runtime)
    sleeper: Any = None
    #: step limits across runs (set by the Runtime)
    limiter: Any = None
    #: run limits: max_concurrent_runs (set by the Runtime)
    admission: Any = None
    #: the cancel flag of each live run (ctx.cancelled); set by rt.cancel at once
    cancel_flags: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: child run -> where its steps' ctx.emit go too (a Loop's Dag body: its parent's streams)
    relays: dict[tuple[str, str], Any] = field(default_factory=dict)
    #: serializes the checkpointer's writes with a lone run's inline commit (None: no checkpointer)
    gate: Any = None
    #: runs with a step on a lent dispatcher thread right now (set/discard are atomic)
    stepping: set[tuple[str, str]] = field(default_factory=set)
    #: False for a client (Runtime(execute=False)): requests are written, workers execute them
    execute: bool = True
    #: follows runs executing in other processes (atomr._follow.Follower; None: store not shared)
    follow: Any = None
    #: what the runtime records about itself: commits, steps, runs (atomr.actors.observe.Observer)
    observer: Any = None
