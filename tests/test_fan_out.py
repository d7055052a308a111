"""dispatch_fan_out(items, fn, max_concurrency): worker threads, bounded,
results in input order, first exception raised once running calls finish."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

import atomr.kinds
from atomr import dispatch_fan_out
from atomr.errors import GraphError

T = 30.0


def test_results_in_input_order_whatever_the_finishing_order():
    n = 5
    finished = [threading.Event() for _ in range(n)]

    def fn(i):
        if i + 1 < n:  # the last item finishes first, the first item last
            assert finished[i + 1].wait(T)
        finished[i].set()
        return i * 10

    assert dispatch_fan_out(range(n), fn, max_concurrency=n) == [0, 10, 20, 30, 40]


def test_runs_on_worker_threads_and_accepts_any_iterable():
    caller = threading.get_ident()
    threads = []

    def fn(x):
        threads.append(threading.get_ident())
        return x.upper()

    assert dispatch_fan_out(iter("abc"), fn, max_concurrency=2) == ["A", "B", "C"]
    assert caller not in threads
    assert dispatch_fan_out([], fn) == []


def test_at_most_max_concurrency_at_once_and_the_bound_is_reached():
    k, n = 3, 9
    lock = threading.Lock()
    active, peak = [0], [0]
    barrier = threading.Barrier(k)  # k calls must run together, or this times out

    def fn(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        barrier.wait(T)
        with lock:
            active[0] -= 1
        return i

    assert dispatch_fan_out(range(n), fn, max_concurrency=k) == list(range(n))
    assert peak[0] == k


def test_sequential_first_exception_stops_new_calls():
    started = []

    def fn(i):
        started.append(i)
        if i == 2:
            raise ValueError("item 2 is bad")
        return i

    with pytest.raises(ValueError, match="item 2 is bad"):
        dispatch_fan_out(range(6), fn, max_concurrency=1)
    assert started == [0, 1, 2]


def test_first_exception_raised_after_running_calls_finish_and_nothing_new_starts(monkeypatch):
    """Item 0 fails while items 1 and 2 run. They are let go only once the
    dispatcher has seen the failure (a spy on concurrent.futures.wait): then
    no further item may start, and the error comes out after 1 and 2 finished."""
    failure_seen = threading.Event()
    real_wait = cf.wait

    def spy(fs, *args, **kwargs):
        done, not_done = real_wait(fs, *args, **kwargs)
        if any(f.exception() is not None for f in done):
            failure_seen.set()
        return done, not_done

    monkeypatch.setattr(atomr.kinds.cf, "wait", spy)
    lock = threading.Lock()
    log: list[str] = []

    class Boom(Exception):
        pass

    def fn(i):
        with lock:
            log.append(f"start {i}")
        if i == 0:
            raise Boom("item 0")
        if i == 3:
            raise Boom("item 3 must never run")
        assert failure_seen.wait(T)
        with lock:
            log.append(f"end {i}")
        return i

    with pytest.raises(Boom, match="item 0"):
        dispatch_fan_out(range(8), fn, max_concurrency=3)
    log.append("raised")
    # 0, 1 and 2 were submitted before the failure was seen; nothing after it
    assert sorted(x for x in log if x.startswith("start")) == ["start 0", "start 1", "start 2"]
    # the error came out only once the running calls had finished
    assert sorted(x for x in log if x.startswith("end")) == ["end 1", "end 2"]
    assert log[-1] == "raised" and len(log) == 6


def test_the_first_of_several_exceptions_wins(monkeypatch):
    seen = threading.Event()
    real_wait = cf.wait

    def spy(fs, *args, **kwargs):
        done, not_done = real_wait(fs, *args, **kwargs)
        if any(f.exception() is not None for f in done):
            seen.set()
        return done, not_done

    monkeypatch.setattr(atomr.kinds.cf, "wait", spy)

    def fn(i):
        if i == 0:
            raise KeyError("first")
        assert seen.wait(T)  # fails only once item 0's failure was seen
        raise KeyError("second")

    with pytest.raises(KeyError, match="first"):
        dispatch_fan_out([0, 1], fn, max_concurrency=2)


def test_max_concurrency_is_checked():
    with pytest.raises(GraphError, match="max_concurrency"):
        dispatch_fan_out([1], lambda x: x, max_concurrency=0)
