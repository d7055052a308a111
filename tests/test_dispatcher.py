"""The dispatcher: a pykka actor type whose actors share a few threads."""

from __future__ import annotations

import threading
import time

import pykka
import pytest

from atomr.actors.dispatcher import DispatchedActor, Dispatcher
from atomr.errors import AtomrError

T = 10.0


@pytest.fixture
def dispatcher():
    d = Dispatcher(threads=3, throughput=4, name="test-dispatch")
    yield d
    d.close()


class Recorder(DispatchedActor):
    """Records the messages it gets and the thread each ran on."""

    def __init__(self, d: Dispatcher, started: threading.Event | None = None) -> None:
        super().__init__()
        self.use_dispatcher(d)
        self.seen: list = []
        self.threads: set[str] = set()
        self.inside = 0
        self.overlap = False
        self.started = started
        self.stopped = threading.Event()

    def on_start(self) -> None:
        self.threads.add(threading.current_thread().name)
        if self.started is not None:
            self.started.set()

    def on_stop(self) -> None:
        self.stopped.set()

    def on_receive(self, message):
        self.inside += 1
        if self.inside > 1:
            self.overlap = True
        try:
            self.threads.add(threading.current_thread().name)
            if message == "get":
                return list(self.seen)
            if message == "threads":
                return set(self.threads)
            if message == "overlap":
                return self.overlap
            if message == "boom":
                raise ValueError("boom")
            if message == "exit":
                raise SystemExit(3)
            self.seen.append(message)
            return None
        finally:
            self.inside -= 1


def test_messages_arrive_in_order_on_the_dispatchers_threads(dispatcher):
    started = threading.Event()
    ref = Recorder.start(dispatcher, started)
    assert started.wait(T)  # on_start ran in the first turn
    for i in range(1000):
        ref.tell(i)
    assert ref.ask("get", timeout=T) == list(range(1000))
    threads = ref.ask("threads", timeout=T)
    assert threads and all(t.startswith("test-dispatch") for t in threads)
    assert ref.ask("overlap", timeout=T) is False
    ref.stop(timeout=T)


def test_many_actors_many_senders_never_two_threads_in_one_actor(dispatcher):
    refs = [Recorder.start(dispatcher) for _ in range(50)]

    def send(k: int) -> None:
        for i in range(200):
            for r in refs:
                r.tell((k, i))

    senders = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    before = threading.active_count()
    for s in senders:
        s.start()
    for s in senders:
        s.join(T)
    for r in refs:
        seen = r.ask("get", timeout=T)
        assert len(seen) == 800
        for k in range(4):  # each sender's messages in its order
            assert [i for kk, i in seen if kk == k] == list(range(200))
        assert r.ask("overlap", timeout=T) is False
    # 50 actors, still only the dispatcher's 3 threads (plus the 4 senders at most)
    assert threading.active_count() <= before + 4
    for r in refs:
        r.stop(timeout=T)


def test_a_busy_actor_yields_its_thread_after_throughput_messages():
    d = Dispatcher(threads=1, throughput=2, name="one")
    try:
        order: list[str] = []
        gate = threading.Event()

        class Busy(DispatchedActor):
            def __init__(self, name: str) -> None:
                super().__init__()
                self.use_dispatcher(d)
                self.name = name

            def on_receive(self, message):
                if message == "wait":
                    gate.wait(T)
                    return None
                order.append(self.name)
                return None

        a, b = Busy.start("a"), Busy.start("b")
        a.tell("wait")  # hold the only thread while both inboxes fill
        time.sleep(0.05)
        for _ in range(6):
            a.tell("x")
        b.tell("y")
        gate.set()
        assert b.ask("sync", timeout=T) is None and a.ask("sync", timeout=T) is None
        # a handled at most 2 messages per turn: b got its turn before a was done
        assert order.index("b") < 6, order
    finally:
        d.close()


def test_ask_exceptions_go_to_the_caller_and_the_actor_lives_on(dispatcher):
    ref = Recorder.start(dispatcher)
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=T)
    ref.tell(1)
    assert ref.ask("get", timeout=T) == [1]
    ref.stop(timeout=T)


def test_a_told_exception_stops_that_actor_only(dispatcher):
    a, b = Recorder.start(dispatcher), Recorder.start(dispatcher)
    a.tell("boom")
    deadline = time.monotonic() + T
    while a.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not a.is_alive()
    with pytest.raises(pykka.ActorDeadError):
        a.tell(1)
    b.tell(2)
    assert b.ask("get", timeout=T) == [2]
    b.stop(timeout=T)


def test_a_base_exception_stops_that_actor_not_every_actor(dispatcher):
    a, b = Recorder.start(dispatcher), Recorder.start(dispatcher)
    with pytest.raises(SystemExit):
        a.ask("exit", timeout=T)
    assert not a.is_alive()
    assert b.is_alive()
    b.tell(5)
    assert b.ask("get", timeout=T) == [5]
    b.stop(timeout=T)


def test_stop_runs_on_stop_and_answers_queued_asks_with_actor_dead(dispatcher):
    gate = threading.Event()

    class Slow(DispatchedActor):
        def __init__(self) -> None:
            super().__init__()
            self.use_dispatcher(dispatcher)

        def on_receive(self, message):
            if message == "block":
                gate.wait(T)
            return message

    ref = Slow.start()
    ref.tell("block")
    stop_future = ref.stop(block=False)
    late = ref.ask("late", block=False)
    gate.set()
    stop_future.get(timeout=T)
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=T)
    assert not ref.is_alive()
    assert ref not in pykka.ActorRegistry.get_all()


def test_a_dispatched_actor_is_a_plain_pykka_actor_for_other_actors(dispatcher):
    got = threading.Event()

    class Echo(DispatchedActor):
        def __init__(self) -> None:
            super().__init__()
            self.use_dispatcher(dispatcher)

        def on_receive(self, message):
            sender, payload = message
            sender.tell(("echo", payload))

    class Caller(pykka.ThreadingActor):
        def on_receive(self, message):
            if message[0] == "echo":
                got.set()

    echo, caller = Echo.start(), Caller.start()
    echo.tell((caller, 1))
    assert got.wait(T)
    assert echo.proxy().actor_urn.get(timeout=T) == echo.actor_urn
    echo.stop(timeout=T)
    caller.stop(timeout=T)


def test_lending_threads_keeps_one_for_turns():
    d = Dispatcher(threads=3)
    try:
        assert d.try_block() and d.try_block()
        assert not d.try_block()  # the third thread stays for actors' turns
        d.unblock()
        assert d.try_block()
    finally:
        d.unblock()
        d.unblock()
        d.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "4", 10_000])
def test_bad_dispatcher_options_are_named_errors(bad):
    with pytest.raises(AtomrError, match="dispatcher threads"):
        Dispatcher(threads=bad)
    with pytest.raises(AtomrError, match="throughput"):
        Dispatcher(throughput=bad if bad != 10_000 else 0)
