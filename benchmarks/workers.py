"""Workers on a shared store: one worker process against two, runs started by a client.

``python -m benchmarks.workers [--backends sqlite,postgres] [--runs 400] [--reps 7] [--profile] [--profile-idle]``
(also ``python benchmarks/workers.py ...``); results go to ``benchmarks/results/<date>-workers.json`` / ``.md``.

Each sample is a fresh store (a new SQLite file with ``synchronous="full"``, or a new
Postgres schema ``bench_<random>``, dropped afterwards) and:

1. the store is created once here (so the processes do not race to make its tables);
2. ``W`` worker processes are started (``python -m benchmarks.workers --serve-worker URL``:
   ``Runtime(URL)`` with the chain registered); each executes a warm-up run of its own
   and prints a ``ready`` line, and the sample waits for all of them;
3. this process opens a client, ``Runtime(URL, execute=False)``, and waits for one
   warm-up run (executed by a worker) to settle;
4. timed section: ``R`` runs of a 20-step chain of plain steps (each returns
   ``{"n": n + 1}``, a small write) are started with ``start_many`` in chunks of
   :data:`CHUNK` (each chunk returns once its starts are durable), then every
   outcome is awaited (through the client's follower: NOTIFY on Postgres, a 50 ms
   poll on SQLite) and checked (``Done`` with ``n == 20``);
5. the workers are told to stop (their stdin closes; ``rt.close()``), killed after
   :data:`STOP_S` seconds if still there.

Figure: super-steps/s = R x 20 / (wall time from the first start to the last
outcome), for ``W`` = 1 and 2 (the two alternate which goes first in each
repetition); a row per backend with the ratio of the medians (2 workers / 1).
Around the timed section it also reads the CPU seconds (``/proc``) of the client,
of each worker, of the Postgres backends serving this sample's connections (found by
their ``application_name``) and of the whole machine (what is left over is other
load on the shared box), how long the workers' threads waited for a CPU
(``schedstat``), the machine's CPU pressure (PSI), and each worker's count of runs taken.

``--profile``: one more sample (of ``--profile-runs`` runs, 1200) per backend and worker count with ``py-spy record``
(``--gil``: only samples that hold the GIL, so the count over the timed section
is how busy each worker's interpreter was; ``--idle`` samples as well with
``--profile-idle``) attached to every worker for exactly the timed section; the
JSON gets the top functions and a breakdown by area.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

if __package__ in (None, ""):  # python benchmarks/workers.py: the repo root, not benchmarks/ (its
    # concurrent.py would hide the standard library's concurrent package)
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    __package__ = "benchmarks"

from benchmarks import _sql

NAME = "workers"
RUNS, STEPS, CHUNK, REPS = 400, 20, 50, 7
WORKER_COUNTS = (1, 2)
#: the issue's goals for 2 workers / 1 worker (the Postgres server shares the 2 cores)
TARGETS = {"sqlite": 1.6, "postgres": 1.4}
READY_S = 120.0  # a worker's start and warm-up run, on a loaded box
RESULT_S = 600.0
STOP_S = 15.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")


def workflow() -> Any:
    from benchmarks._graphs import atomr_chain

    return atomr_chain("chain", STEPS)


# -- the worker process ----------------------------------------------------------------------------


def open_url(url: str, app: str | None) -> Any:
    """The store at ``url``; on Postgres its connections named ``app`` (so the bench finds their backends)."""
    import atomr

    return atomr.open_store(url, **({"application_name": app} if app else {}))


def serve_worker(url: str, app: str | None = None) -> int:
    """A worker: ``Runtime(url)`` with the chain; a warm-up run; ``ready``; on stdin's EOF
    close and print what it did as one JSON line."""
    from atomr import Done, Runtime

    t0 = time.perf_counter()
    rt = Runtime(open_url(url, app))
    rt.register(workflow())
    warm = rt.start("chain", {"n": 0}, run_id=f"warm-{rt.worker_id}").result(timeout=READY_S)
    if not (isinstance(warm, Done) and warm.state["n"] == STEPS):
        print(f"error warm-up run ended {warm!r}", flush=True)
        return 1
    print(f"ready {os.getpid()} {rt.worker_id} {time.perf_counter() - t0:.2f}", flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    taken = rt._worker.taken if rt._worker is not None else None
    rt.close()
    cpu = os.times()
    print("done " + json.dumps({"taken": taken, "cpu_s": round(cpu.user + cpu.system, 3)}), flush=True)
    return 0


class WorkerProc:
    def __init__(self, url: str, app: str | None, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.workers", "--serve-worker", url, *(["--app", app] if app else [])],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self.pid = self.proc.pid
        self.ready_s: float | None = None
        self.done: dict[str, Any] = {}

    def wait_ready(self, deadline: float) -> None:
        box: list[str] = []
        out, err = self.proc.stdout, self.proc.stderr
        assert out is not None and err is not None
        t = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
        line = box[0] if box else ""
        if not line.startswith("ready "):
            self.kill()
            text = err.read()[-3000:] if self.proc.poll() is not None else ""
            raise RuntimeError(f"worker {self.pid} not ready: {line!r} {text}")
        self.ready_s = float(line.split()[3])

    def stop(self) -> None:
        try:  # closes its stdin: the worker closes its runtime and prints "done"
            out, err = self.proc.communicate(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
        for line in out.splitlines():
            if line.startswith("done "):
                self.done = json.loads(line[5:])
        if self.proc.returncode not in (0, -signal.SIGKILL):
            print(f"worker {self.pid} exited {self.proc.returncode}: {err[-2000:]}", file=sys.stderr)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # this process's own child, by its pid
            self.proc.wait()


# -- CPU accounting (/proc) ----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def postgres_cpu(app: str) -> dict[int, float]:
    """pid -> CPU seconds of the server's backends serving connections named ``app`` (this
    sample's client and workers; the server runs on this machine). Other sessions of the
    server (other users of the box) are left out; its WAL writer and checkpointer too."""
    with _sql._connect() as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()]
    return {pid: proc_cpu(pid) for pid in pids}


def runq_wait(pid: int | str) -> float:
    """Seconds the threads of process ``pid`` (living now) have spent runnable but waiting for a
    CPU (``/proc/<pid>/task/*/schedstat``, second field); 0 where it cannot be read."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def cpu_pressure() -> float | None:
    """Seconds during which some task of the machine waited for a CPU (PSI ``cpu some``)."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            return int(f.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return None


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return (sum(parts[:8]) - idle) / CLK


class CpuWindow:
    """CPU seconds spent by the client, the workers, Postgres and the machine between begin() and end()."""

    def __init__(self, workers: list[WorkerProc], app: str | None) -> None:
        self.workers = workers
        self.app = app

    def _read(self) -> dict[str, Any]:
        t = os.times()
        return {"client": t.user + t.system, "workers": [proc_cpu(w.pid) for w in self.workers],
                "postgres": postgres_cpu(self.app) if self.app else {}, "machine": machine_busy(),
                "runq": [runq_wait(w.pid) for w in self.workers], "client_runq": runq_wait("self"),
                "psi": cpu_pressure()}

    def begin(self) -> None:
        self.a = self._read()

    def end(self, wall: float) -> dict[str, Any]:
        b, a = self._read(), self.a
        pg = sum(v - a["postgres"].get(pid, 0.0) for pid, v in b["postgres"].items())
        client = b["client"] - a["client"]
        workers = [y - x for x, y in zip(a["workers"], b["workers"])]
        machine = b["machine"] - a["machine"]
        ours = client + sum(workers) + pg
        r = lambda x: round(x / wall, 3)
        psi = None if a["psi"] is None or b["psi"] is None else round((b["psi"] - a["psi"]) / wall, 3)
        return {"client_cores": r(client), "worker_cores": [r(w) for w in workers], "postgres_cores": r(pg),
                "machine_cores": r(machine), "other_cores": r(max(0.0, machine - ours)),
                # threads runnable but waiting for a CPU, on average (threads ended meanwhile not counted)
                "worker_runq": [r(max(0.0, y - x)) for x, y in zip(a["runq"], b["runq"])],
                "client_runq": r(max(0.0, b["client_runq"] - a["client_runq"])),
                "cpu_pressure_some": psi}


# -- py-spy -----------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return here if os.path.exists(here) else shutil.which("py-spy")


class Spy:
    """``py-spy record --format raw`` on each worker, stopped with SIGINT (it then writes its file)."""

    RATE = 100

    def __init__(self, workers: list[WorkerProc], directory: str, idle: bool) -> None:
        self.files = [os.path.join(directory, f"w{i}.txt") for i in range(len(workers))]
        self.procs = []
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        for w, path in zip(workers, self.files):
            cmd = [exe, "record", "--format", "raw", "-o", path, "-p", str(w.pid), "-r", str(self.RATE),
                   "--threads", "--nonblocking", "--idle" if idle else "--gil"]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                               text=True))
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # our own py-spy child
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _area(stack: list[str]) -> str:
    """A coarse label for a sampled stack (innermost frame last)."""
    text = ";".join(stack)
    leaf = stack[-1] if stack else ""
    if "_wait" in leaf and ("threading" in leaf or "queue" in leaf) or "wait (threading" in leaf:
        return "waiting (lock/queue/event)"
    rules = [
        ("commit (sqlite3)", ("commit (sqlite", "execute (sqlite", "executemany (sqlite")),
        ("psycopg (Postgres I/O)", ("psycopg",)),
        ("codec (msgpack)", ("codec.py", "msgpack")),
        ("pykka / actors", ("pykka",)),
    ]
    for label, keys in rules:
        if any(k in leaf for k in keys):
            return label
    for label, where in (("store (atomr/store)", "store/"), ("worker loop (claim/heartbeat)", "_worker.py"),
                         ("follower", "_follow.py")):
        if where in leaf:
            return label
    if "inc (benchmarks/_graphs" in text and "_graphs.py" in leaf:
        return "the step's own code"
    if "atomr" in leaf:
        return "atomr runtime (other)"
    return "other (stdlib, interpreter)"


def summarize_profile(path: str, wall: float, rate: int) -> dict[str, Any]:
    """Areas, top functions and, per thread (numbered names folded), where its samples were
    (innermost atomr frame > innermost frame) of one raw py-spy file."""
    leaf: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    per_thread: dict[str, Counter[str]] = {}
    total = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return {"error": f"no profile written at {path}"}
    for line in lines:
        stack_text, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = stack_text.split(";")
        thread = ""
        if frames and frames[0].startswith("thread ("):
            thread = re.sub(r"-\d+$", "", frames.pop(0).split(": ", 1)[-1])
            thread = re.sub(r"^atomr-bench_[0-9a-f]+-", "atomr-<schema>-", thread)
        total += count
        if not frames:
            continue
        leaf[frames[-1]] += count
        areas[_area(frames)] += count
        mine = [fr for fr in frames if "atomr/" in fr]
        where = (mine[-1].split(" (")[0] if mine else "-") + " > " + frames[-1]
        per_thread.setdefault(thread, Counter())[where] += count
    per_s = rate * wall
    pct = lambda c, t=None: round(100.0 * c / (t or total), 1) if (t or total) else 0.0
    threads = {}
    for name, c in sorted(per_thread.items(), key=lambda kv: -sum(kv[1].values())):
        t = sum(c.values())
        threads[name] = {"samples": t, "top_pct": {k: pct(v, t) for k, v in c.most_common(6)}}
    return {
        "samples": total,
        "samples_per_wall": round(total / per_s, 3) if per_s else None,
        "areas_pct": {k: pct(v) for k, v in areas.most_common()},
        "top_self_pct": {k: pct(v) for k, v in leaf.most_common(15)},
        "threads": threads,
    }


# -- one sample ----------------------------------------------------------------------------------------


def store_url(backend: str, directory: str) -> tuple[str, str | None]:
    if backend == "sqlite":
        return "sqlite:///" + os.path.join(directory, "atomr.sqlite"), None
    schema = _sql.new_schema_name()
    dsn = _sql.pg_dsn()
    return dsn + ("&" if "?" in dsn else "?") + f"schema={schema}", schema


def sample(backend: str, n_workers: int, runs: int, scratch: str, spy: str | None = None,
           spy_dir: str | None = None) -> dict[str, Any]:
    """One measurement: ``n_workers`` worker processes, a client starting ``runs`` chains."""
    from atomr import Done, Runtime

    directory = tempfile.mkdtemp(prefix=f"atomr-workers-{backend}-", dir=scratch)
    url, schema = store_url(backend, directory)
    app = f"atomr-{schema}" if schema else None
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    workers: list[WorkerProc] = []
    try:
        open_url(url, app).close()  # tables made once, before any process races to make them
        workers = [WorkerProc(url, app, env) for _ in range(n_workers)]
        deadline = time.monotonic() + READY_S
        for w in workers:
            w.wait_ready(deadline)
        wf = workflow()
        with Runtime(open_url(url, app), execute=False) as rt:
            rt.register(wf)
            warm = rt.start("chain", {"n": 0}, run_id="warm-client").result(timeout=RESULT_S)
            if not (isinstance(warm, Done) and warm.state["n"] == STEPS):
                raise RuntimeError(f"client warm-up run ended {warm!r}")
            cpu = CpuWindow(workers, app)
            profiler = Spy(workers, spy_dir or directory, spy == "idle") if spy else None
            cpu.begin()
            t0 = time.perf_counter()
            handles = []
            for lo in range(0, runs, CHUNK):
                ids = [f"r{i}" for i in range(lo, min(runs, lo + CHUNK))]
                handles += rt.start_many("chain", [{"n": 0}] * len(ids), ids, timeout=RESULT_S)
            t_started = time.perf_counter()
            outs = [h.result(timeout=RESULT_S) for h in handles]
            wall = time.perf_counter() - t0
            usage = cpu.end(wall)
            if profiler is not None:
                profiler.stop()
                if spy_dir and os.environ.get("ATOMR_BENCH_KEEP_SPY"):
                    shutil.copytree(spy_dir, os.environ["ATOMR_BENCH_KEEP_SPY"] + f"/{backend}-{n_workers}w-{spy}",
                                    dirs_exist_ok=True)
            bad = [o for o in outs if not (isinstance(o, Done) and o.state["n"] == STEPS)]
            if bad:
                raise RuntimeError(f"{len(bad)} runs ended wrong, e.g. {bad[:1]!r}")
        for w in workers:
            w.stop()
        out = {"backend": backend, "workers": n_workers, "runs": runs, "wall_s": round(wall, 4),
               "start_phase_s": round(t_started - t0, 4), "rate": runs * STEPS / wall,
               "taken": [w.done.get("taken") for w in workers],
               "ready_s": [w.ready_s for w in workers], **usage}
        ours = usage["client_cores"] + sum(usage["worker_cores"]) + usage["postgres_cores"]
        out["cpu_ms_per_step"] = round(1000.0 * ours * wall / (runs * STEPS), 4)  # client + workers + Postgres
        if profiler is not None:
            out["profile"] = [summarize_profile(p, wall, Spy.RATE) for p in profiler.files]
            out["profile_mode"] = spy
        return out
    finally:
        for w in workers:
            w.kill()
        shutil.rmtree(directory, ignore_errors=True)
        if schema is not None:
            with contextlib.suppress(Exception):
                _sql.drop_schema(schema)


# -- the bench --------------------------------------------------------------------------------------


def _line(s: dict[str, Any]) -> str:
    return (f"{s['backend']:8} {s['workers']} worker(s)  {s['rate']:7.0f} super-steps/s  wall {s['wall_s']:.2f}s "
            f"(starts {s['start_phase_s']:.2f}s)  taken {s['taken']}  cores: client {s['client_cores']:.2f} "
            f"workers {s['worker_cores']} pg {s['postgres_cores']:.2f} machine {s['machine_cores']:.2f} "
            f"other {s['other_cores']:.2f}  cpu {s['cpu_ms_per_step']:.3f} ms/step  runq workers {s['worker_runq']} "
            f"client {s['client_runq']}  psi {s['cpu_pressure_some']}")


def row(backend: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    from benchmarks._common import summarize

    by = {w: [s for s in samples if s["workers"] == w] for w in WORKER_COUNTS}
    sides = {f"{w}w": summarize([s["rate"] for s in by[w]]) for w in WORKER_COUNTS}
    one, two = sides["1w"]["value"], sides["2w"]["value"]
    ratio = two / one if one and two else None
    paired = [b["rate"] / a["rate"] for a, b in zip(by[1], by[2])]

    def med(key: str, w: int, i: int | None = None) -> float:
        vals = [s[key][i] if i is not None else s[key] for s in by[w]]
        return round(statistics.median(vals), 3)

    cores = {f"{w}w": {"client": med("client_cores", w), "workers": [med("worker_cores", w, i) for i in range(w)],
                       "postgres": med("postgres_cores", w), "machine": med("machine_cores", w),
                       "other": med("other_cores", w), "start_phase_s": med("start_phase_s", w),
                       "wall_s": med("wall_s", w), "cpu_ms_per_step": med("cpu_ms_per_step", w),
                       "worker_runq": [med("worker_runq", w, i) for i in range(w)],
                       "client_runq": med("client_runq", w),
                       "cpu_pressure_some": med("cpu_pressure_some", w) if all(
                           s["cpu_pressure_some"] is not None for s in by[w]) else None}
             for w in WORKER_COUNTS}
    return {"id": f"{NAME}.{backend}", "unit": "super-steps/s", "one_worker": sides["1w"],
            "two_workers": sides["2w"], "ratio": ratio,
            "paired_ratios": [round(x, 3) for x in paired],
            "target": TARGETS[backend], "meets_target": None if ratio is None else ratio >= TARGETS[backend],
            "cores_median": cores}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}/s"


def markdown(res: dict[str, Any]) -> str:
    p = res["params"]
    lines = [(f"**Workers on a shared store: {p['runs']} runs x {p['steps']} plain steps started by a client "
              f"(`start_many` in chunks of {p['chunk']}), super-steps/s from the first start to the last "
              f"outcome; median [min..max] of {p['reps']}**"), "",
             "| workload | 1 worker | 2 workers | 2 / 1 (medians) | paired ratios | target | met |",
             "|---|---|---|---|---|---|---|"]
    cores = [("| case | workers (cores each) | client | Postgres | machine | other load | CPU ms / super-step "
              "(ours) | workers' threads waiting for a CPU | CPU pressure | start phase | wall |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        one, two = r["one_worker"], r["two_workers"]
        lines.append(f"| {r['id']} | {_fmt(one['value'])} [{_fmt(one['min'])}..{_fmt(one['max'])}] | "
                     f"{_fmt(two['value'])} [{_fmt(two['min'])}..{_fmt(two['max'])}] | "
                     f"{r['ratio']:.2f}x | {', '.join(f'{x:.2f}' for x in r['paired_ratios'])} | "
                     f">= {r['target']}x | {'yes' if r['meets_target'] else 'NO'} |")
        for k, x in r["cores_median"].items():
            cores.append(f"| {r['id']} {k} | {' + '.join(f'{v:.2f}' for v in x['workers'])} | {x['client']:.2f} | "
                         f"{x['postgres']:.2f} | {x['machine']:.2f} | {x['other']:.2f} | {x['cpu_ms_per_step']:.3f} | "
                         f"{' + '.join(f'{v:.2f}' for v in x['worker_runq'])} | "
                         f"{_pct(x['cpu_pressure_some'])} | "
                         f"{x['start_phase_s']:.2f} s | {x['wall_s']:.2f} s |")
    for s in res.get("skipped", []):
        lines.append(f"| {s['id']} | skipped: {s['reason']} | | | | | | |")
    m = res["machine"]
    lines += ["", ("CPU during the timed section (medians; cores = CPU seconds / wall, from `/proc`; Postgres = "
                   "the server backends of this sample's connections; machine = every process on the box; other "
                   "load = machine minus this bench's processes):"), "", *cores]
    git = res.get("git") or {}
    lines += ["", f"Command: `python -m benchmarks.workers {' '.join(res.get('argv', []))}`"
              + (" (from a `git archive` of the commit below)" if git.get("note") else "") + "."]
    lines += ["", (f"{m.get('cpu_count')} CPUs, Python {m.get('python')}, SQLite {m.get('sqlite_version')}; "
              f"load average at start {m.get('loadavg_start')}; {res['date']}; commit "
              f"{(res.get('git') or {}).get('commit', '?')[:10]}. Cores: CPU seconds / wall of the timed "
              "section (`/proc`), machine = every process on the box."), ""]
    if res.get("findings"):
        lines += ["What limits it:", ""] + [f"* {x}" for x in res["findings"]] + [""]
    if res.get("profiles"):
        lines += ["Profiles (py-spy, areas of each worker's samples, % of its samples):", ""]
        for pr in res["profiles"]:
            for i, prof in enumerate(pr.get("profile", [])):
                head = (f"* {pr['backend']} {pr['workers']}w ({pr['rate']:,.0f}/s) worker {i}, "
                        f"{pr['profile_mode']}")
                if pr["profile_mode"] == "gil":
                    areas = ", ".join(f"{k} {v}%" for k, v in list(prof.get("areas_pct", {}).items())[:6])
                    lines.append(f"{head}: {prof.get('samples_per_wall')} GIL-holding samples per tick; {areas}")
                    continue
                for name in ("Checkpointer", "atomr-worker"):
                    th = prof.get("threads", {}).get(name)
                    if th:
                        top = "; ".join(f"{v}% `{k}`" for k, v in list(th["top_pct"].items())[:4])
                        lines.append(f"{head}, thread {name}: {top}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--runs", type=int, default=RUNS)
    p.add_argument("--reps", type=int, default=REPS)
    p.add_argument("--profile", action="store_true", help="one more sample per case under py-spy --gil")
    p.add_argument("--profile-idle", action="store_true", help="and one under py-spy --idle")
    p.add_argument("--profile-only", action="store_true", help="no measured reps, only the profiled samples")
    p.add_argument("--profile-runs", type=int, default=1200, help="runs of a profiled sample (a longer window)")
    p.add_argument("--findings", default=None, metavar="FILE", help="lines for 'what limits it' (one a line)")
    today = _dt.date.today().isoformat()
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", f"{today}-workers.json"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--render", action="store_true", help="only rewrite --out's .md from its JSON (and --findings)")
    p.add_argument("--serve-worker", default=None, metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--app", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_worker:
        return serve_worker(args.serve_worker, args.app)
    if args.render:
        with open(args.out, encoding="utf-8") as f:
            return write(json.load(f), args)

    import atomr
    import benchmarks as harness

    scratch = tempfile.mkdtemp(prefix="atomr-bench-workers-")
    samples: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    skipped, rows = [], []
    t_begin = time.time()
    res: dict[str, Any] = {"schema": 1, "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                           "argv": sys.argv[1:], "machine": harness._machine(scratch), "git": harness._git(),
                           "versions": harness._versions(), "atomr_source": os.path.dirname(atomr.__file__)}
    if res["git"] is None and os.environ.get("ATOMR_BENCH_COMMIT"):  # run from an exported snapshot
        res["git"] = {"commit": os.environ["ATOMR_BENCH_COMMIT"], "atomr_uncommitted_paths": 0,
                      "note": "run from `git archive` of this commit"}
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            why = _sql.skip_reason(backend)
            if why is not None:
                skipped.append({"id": f"{NAME}.{backend}", "reason": why})
                print(f"{backend}: skipped: {why}", file=sys.stderr)
                continue
            mine = []
            for rep in range(0 if args.profile_only else args.reps):
                for w in WORKER_COUNTS if rep % 2 == 0 else WORKER_COUNTS[::-1]:
                    s = sample(backend, w, args.runs, scratch)
                    print(_line(s), flush=True)
                    mine.append(s)
            samples += mine
            if mine:
                rows.append(row(backend, mine))
                r = rows[-1]
                print(f"{backend}: 1 worker {r['one_worker']['value']:.0f}/s, 2 workers "
                      f"{r['two_workers']['value']:.0f}/s, ratio {r['ratio']:.2f}x (target {r['target']}x)",
                      flush=True)
            modes = (["gil"] if args.profile or args.profile_only else []) + (["idle"] if args.profile_idle else [])
            for mode in modes:
                for w in WORKER_COUNTS:
                    d = tempfile.mkdtemp(prefix="spy-", dir=scratch)
                    s = sample(backend, w, args.profile_runs, scratch, spy=mode, spy_dir=d)
                    print("profiled: " + _line(s), flush=True)
                    for i, prof in enumerate(s["profile"]):
                        print(f"  worker {i} ({mode}): samples/wall-tick {prof.get('samples_per_wall')}  "
                              f"{prof.get('areas_pct')}", flush=True)
                        for name in ("Checkpointer", "atomr-worker"):
                            th = prof.get("threads", {}).get(name)
                            if th and mode == "idle":
                                top = "; ".join(f"{v}% {k}" for k, v in list(th["top_pct"].items())[:4])
                                print(f"      {name}: {top}")
                    profiles.append(s)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["machine"]["loadavg_end"] = harness._loadavg()
    res["duration_s"] = round(time.time() - t_begin, 1)
    res["params"] = {"runs": args.runs, "steps": STEPS, "chunk": CHUNK, "reps": args.reps,
                     "worker_counts": list(WORKER_COUNTS), "sqlite": "SqliteStore(synchronous='full') (WAL)",
                     "postgres": "PostgresStore, a fresh schema per sample (server defaults)",
                     "worker": "Runtime(url) defaults: lease_s=10, concurrency=1000, claims <= 64 per look, "
                               "poll 0.1 s (Postgres: NOTIFY)",
                     "client": "Runtime(url, execute=False)", "pg_dsn": _sql.masked_dsn()}
    res["rows"], res["skipped"], res["samples"], res["profiles"] = rows, skipped, samples, profiles
    if any(s["backend"] == "postgres" for s in samples + profiles):
        with contextlib.suppress(Exception):
            res["postgres"] = _sql.pg_server()
    return write(res, args)


def write(res: dict[str, Any], args: argparse.Namespace) -> int:
    if args.findings:
        with open(args.findings, encoding="utf-8") as f:
            res["findings"] = [x.strip() for x in f if x.strip()]
    md = markdown(res)
    print()
    print(md)
    if not args.no_write:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
            f.write(md + "\n")
        print(f"wrote {args.out} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
