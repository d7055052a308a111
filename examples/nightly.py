"""A nightly hand-off: a schedule starts a run each night; the run prepares the
batch, sleeps durably until the partner's cut-off time, then sends it.

Several run controls together:

* a schedule (``rt.schedule`` / ``atomr schedule add``) starts the runs; each
  run's id is ``nightly@<due time>``, so a restart never starts a night twice,
  and ``overlap="skip"`` skips a night while the previous run still waits;
* a durable timer: ``ctx.sleep_until(cutoff)`` suspends the run (status
  "sleeping", no thread), across restarts too;
* cancellation: ``rt.cancel`` / ``atomr cancel`` ends a sleeping run for good.

Try it with seconds instead of nights (in a scratch directory; the store is
``./.atomr``)::

    python -m examples.nightly --every 5 --wait 30 --for 12
        # a schedule every 5 s; a run prepares its batch, then sleeps until
        # 30 s after its due time; the process stops after 12 s, leaving the
        # run sleeping in the store (later due times were skipped: it still waits)
    atomr runs --status sleeping
    atomr cancel nightly 'nightly@<due time>' --reason "partner closed today"
    python -m examples.nightly --every 5 --wait 30 --for 40
        # a new run starts (catch-up "one": once for the nights missed), then
        # waits and is sent; the cancelled one stays cancelled
    atomr schedule ls

In production the schedule is added once and a server runs it::

    atomr schedule add nightly examples.nightly:workflow --cron "0 2 * * *" \\
        --input '{"partner": "acme", "wait_s": 14400}' --catch-up one
    atomr serve examples.nightly:workflow
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from atomr import AppendList, Dag, LastWriteWins, LmdbStore, Runtime, StateSchema, Workflow

SPEC = "examples.nightly:workflow"

schema = StateSchema({
    "partner": (LastWriteWins(), "acme"),
    "wait_s": (LastWriteWins(), 4 * 3600.0),   # the cut-off, counted from the night's due time
    "cutoff": (LastWriteWins(), None),
    "batch": (LastWriteWins(), None),
    "sent_at": (LastWriteWins(), None),
    "log": AppendList(),
})


def due_time(run_id: str) -> float:
    """The due time of a scheduled run (its id is ``<schedule>@<ISO time>``); now otherwise."""
    _, _, stamp = run_id.rpartition("@")
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def prepare(state, ctx):
    batch = f"{state['partner']}-{ctx.run_id.rpartition('@')[2] or ctx.run_id}"
    # the cut-off is kept in the state: a re-run of the next step waits for the same time
    return {"batch": batch, "cutoff": due_time(ctx.run_id) + state["wait_s"],
            "log": [f"prepared {batch}"]}


def wait_for_cutoff(state, ctx):
    ctx.sleep_until(state["cutoff"])   # durable; an overdue cut-off returns at once
    return {"log": ["cut-off reached"]}


def send(state, ctx):
    # ctx.idempotency_key would make a real upload idempotent
    return {"sent_at": time.time(), "log": [f"sent {state['batch']} to {state['partner']}"]}


dag = (Dag.builder("prepare")
       .step("prepare", prepare).step("wait", wait_for_cutoff).step("send", send)
       .edge("prepare", "wait").edge("wait", "send")
       .build())
workflow = Workflow("nightly", dag, schema)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m examples.nightly", description=__doc__.split("\n")[0])
    p.add_argument("--store", default=".atomr")
    p.add_argument("--every", type=float, default=5.0, help="seconds between 'nights'")
    p.add_argument("--wait", type=float, default=30.0, help="cut-off, seconds after the due time")
    p.add_argument("--for", dest="duration", type=float, default=12.0, help="seconds to run")
    args = p.parse_args(argv)
    with Runtime(store=LmdbStore(args.store)) as rt:
        rt.register(workflow)      # arms the stored schedule and the runs sleeping in the store
        rt.recover()               # runs a stopped process left mid-step
        rt.schedule("nightly", "nightly", every_s=args.every, input={"wait_s": args.wait},
                    catch_up="one", meta={"module": SPEC})
        end = time.monotonic() + args.duration
        seen: dict[str, str] = {}
        while time.monotonic() < end:
            for s in rt.runs(workflow_id="nightly"):
                if seen.get(s.run_id) != s.status:
                    seen[s.run_id] = s.status
                    print(f"{s.run_id}: {s.status}", flush=True)
            time.sleep(0.2)
        [sched] = rt.schedules("nightly")
        print(f"fired {sched.fired}, skipped {sched.skipped}; stopping (sleeping runs stay in the store)")


if __name__ == "__main__":
    main()
