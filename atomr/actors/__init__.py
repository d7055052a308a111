"""The effectful loop: run actors, step actors, the checkpointer, the supervisor."""

from atomr.actors.checkpointer import Checkpointer
from atomr.actors.step import LocalExecutor, StepActor, StepContext
from atomr.actors.supervisor import Supervisor
from atomr.actors.workflow import WorkflowActor

__all__ = ["Checkpointer", "LocalExecutor", "StepActor", "StepContext", "Supervisor", "WorkflowActor"]
