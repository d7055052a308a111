"""A run's later turn after kill -9: recover() carries the turn on from its last
committed super-step — on LMDB, SQLite (synchronous full and normal) and
Postgres; no step of the turn whose completion was committed runs again."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomr import Done, Runtime
from atomr import events as ev
from kinds_scripts import turn
from workflows import CRASH_KINDS, CrashTarget, crash_targets, kill_at_ready

crash_target = crash_targets(*CRASH_KINDS)

T = 60.0
SCRIPT = Path(turn.__file__).resolve()


def _kill_mid_turn(tmp_path: Path, target: CrashTarget, durability: str) -> tuple[str, str]:
    side, go = str(tmp_path / "side.txt"), str(tmp_path / "go")
    kill_at_ready([str(SCRIPT), target.url, side, go, durability], go)
    return side, go


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_a_turn_killed_mid_way_is_recovered_from_its_last_committed_super_step(tmp_path, crash_target, durability):
    side, go = _kill_mid_turn(tmp_path, crash_target, durability)
    with Runtime(store=crash_target.open()) as rt:
        rt.register(turn.workflow(side, go))
        view = rt.get_state(turn.WID, turn.RUN_ID)
        assert view.status == "running" and view.values["msg"] == "two"
        labels = [c.label for c in rt.history(turn.WID, turn.RUN_ID)]
        assert labels[labels.index("turn:1"):] == ["turn:1", "layer:1"]
        [h] = rt.recover()
        out = h.result(timeout=T)
        assert isinstance(out, Done), out
        assert out.state["log"] == ["hear:one", "think:one", "reply:one", "hear:two", "think:two", "reply:two"]
        ran = Path(side).read_text().splitlines()
        # the first turn and the second's committed hear once each; think was cut off: once more
        assert ran == ["hear one 1", "think one 2", "reply one 3", "hear two 4", "think two 5", "think two 5",
                       "reply two 6"]
        events = [e for _, e in rt.store.journal(turn.WID, turn.RUN_ID)]
        assert [e.turn for e in events if type(e) is ev.TurnStarted] == [1]
        assert [c.label for c in rt.history(turn.WID, turn.RUN_ID)][-4:] == ["layer:1", "layer:2", "layer:3", "done"]


def test_a_turn_killed_under_durability_exit_is_lost_whole(tmp_path):
    """durability "exit" writes nothing before a pause or the end: the turn was never
    stored, the run is as its first turn left it (done), and it can take the turn again."""
    target = CrashTarget("lmdb", tmp_path)
    side, go = _kill_mid_turn(tmp_path, target, "exit")
    with Runtime(store=target.open()) as rt:
        rt.register(turn.workflow(side, go))
        assert rt.get_state(turn.WID, turn.RUN_ID).status == "done"
        assert rt.recover() == []
        out = rt.start(turn.WID, {"msg": "two"}, run_id=turn.RUN_ID, if_exists="continue").result(timeout=T)
        assert out.state["log"][-3:] == ["hear:two", "think:two", "reply:two"]
