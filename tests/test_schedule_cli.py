"""`atomr schedule add|rm|ls` (subprocesses) and examples/nightly.py: a schedule
whose runs sleep until a cut-off and can be cancelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from atomr import Cancelled, Done, LmdbStore, MemoryStore, Runtime
from atomr.cli import main

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import nightly  # noqa: E402

T = 20.0
SPEC = "examples.nightly:workflow"


def atomr(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-m", "atomr", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=60)


class Cli:
    """``atomr ...`` in this process (the subprocess form costs a second per call here)."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys

    def __call__(self, *args: str, code: int = 0) -> str:
        self.capsys.readouterr()
        rc = main(list(args))
        out, err = self.capsys.readouterr()
        assert rc == code, out + err
        if code == 2:
            [line] = err.strip().splitlines()
            assert line.startswith("atomr: error: ")
            return line
        return out


def wait_for(cond, what: str, timeout: float = T):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


FIRE = textwrap.dedent("""
    import time
    from atomr import LmdbStore, Runtime
    from examples import nightly
    with Runtime(store=LmdbStore(".atomr")) as rt:
        rt.register(nightly.workflow)          # arms the schedules added by the CLI
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not rt.runs(status="done"):
            time.sleep(0.05)
        rt.flush()
        print(rt.runs(status="done")[0].run_id)
""")


def test_schedule_add_ls_rm_and_a_process_that_fires_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cli = Cli(capsys)
    assert "no schedules" in cli("schedule", "ls")
    out = cli("schedule", "add", "nightly", SPEC, "--cron", "0 2 * * *", "--input", '{"partner": "acme"}')
    assert "schedule nightly: nightly cron '0 2 * * *' (UTC)" in out and "T02:00:00Z" in out
    cli("schedule", "add", "tick", SPEC, "--every", "0.2", "--input", '{"wait_s": 0}', "--overlap", "allow",
        "--catch-up", "one")
    assert "minute field '61'" in cli("schedule", "add", "x", SPEC, "--cron", "61 * * * *", code=2)
    assert "not allowed with" in cli("schedule", "add", "x", SPEC, "--cron", "* * * * *", "--every", "5", code=2)
    assert "unknown channel 'nope'" in cli("schedule", "add", "x", SPEC, "--every", "5", "--input", '{"nope": 1}',
                                           code=2)
    assert "no schedule 'x'" in cli("schedule", "rm", "x", code=2)
    capsys.readouterr()
    assert main(["schedule"]) == 2 and "ACTION" in capsys.readouterr().out  # no action: its help
    listed = json.loads(cli("schedule", "ls", "--json"))
    assert [(s["schedule_id"], s["cron"], s["every_s"], s["overlap"], s["catch_up"]) for s in listed] == [
        ("nightly", "0 2 * * *", None, "skip", "none"), ("tick", None, 0.2, "allow", "one")]
    assert listed[0]["input"] == {"partner": "acme"} and listed[0]["next_due_iso"].endswith("T02:00:00Z")
    assert "removed schedule nightly" in cli("schedule", "rm", "nightly")
    table = cli("schedule", "ls")
    assert [line.split()[0] for line in table.splitlines()] == ["ID", "tick"] and "every 0.2 s" in table

    # the CLI only edits the store: a process that runs the workflow starts the runs
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    fired = subprocess.run([sys.executable, "-c", FIRE], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert fired.returncode == 0, fired.stderr
    run_id = fired.stdout.strip().splitlines()[-1]
    assert run_id.startswith("tick@")
    proc = atomr(tmp_path, "schedule", "ls", "--json")  # the command itself, as a user runs it
    assert proc.returncode == 0, proc.stderr
    [tick] = json.loads(proc.stdout)
    assert tick["fired"] >= 1 and tick["last_fired"] is not None
    runs = json.loads(cli("runs", "--json"))
    mine = next(r for r in runs if r["run_id"] == run_id)
    assert mine["status"] == "done" and mine["meta"]["module"] == SPEC and mine["meta"]["schedule"] == "tick"


def test_nightly_runs_sleep_until_the_cut_off_and_can_be_cancelled():
    with Runtime(store=MemoryStore()) as rt:
        rt.register(nightly.workflow)
        rt.schedule("nightly", "nightly", every_s=0.2, input={"partner": "acme", "wait_s": 60})
        first = wait_for(lambda: rt.runs(status="sleeping"), "a sleeping run")[0].run_id
        view = rt.get_state("nightly", first)
        assert view.wake_at == view.values["cutoff"] == nightly.due_time(first) + 60
        wait_for(lambda: rt.schedules()[0].skipped >= 2, "nights skipped while it waits")
        assert len(rt.runs()) == 1
        out = rt.cancel("nightly", first, reason="partner closed today")
        assert isinstance(out, Cancelled) and out.reason == "partner closed today"
        second = wait_for(lambda: [s for s in rt.runs(status="sleeping") if s.run_id != first], "the next night")
        rt.unschedule("nightly")
        rt.wake("nightly", second[0].run_id)  # the partner's cut-off came early
        done = rt.handle("nightly", second[0].run_id).result(timeout=T)
        assert isinstance(done, Done) and done.state["sent_at"] is not None
        assert done.state["log"][-2:] == ["cut-off reached", f"sent {done.state['batch']} to acme"]
        assert rt.get_state("nightly", first).status == "cancelled"


def test_the_nightly_example_runs_end_to_end(tmp_path, capsys):
    store = str(tmp_path / "s")
    nightly.main(["--store", store, "--every", "0.3", "--wait", "0.2", "--for", "1.5"])
    out = capsys.readouterr().out
    assert ": done" in out and "fired " in out
    with LmdbStore(store, readonly=True) as s:
        assert [r.schedule_id for r in s.list_schedules()] == ["nightly"]
        assert any(r.status == "done" for r in s.runs())
