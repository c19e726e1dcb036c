"""A tier's worker threads: its limit holds, results and exceptions come back to the caller,
and the event loop keeps running while calls block."""

from __future__ import annotations

import threading
import time
import weakref

import pytest
import trio

from tierfs.tiers.workers import Workers


def test_no_more_calls_run_at_once_than_the_tier_has_threads() -> None:
    workers = Workers("test", 3)
    running = peak = 0
    lock = threading.Lock()

    def call(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return i * i

    async def main() -> list[int]:
        results = [0] * 12

        async def one(i: int) -> None:
            results[i] = await workers.run(call, i)

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(one, i)
        return results

    assert trio.run(main) == [i * i for i in range(12)]
    assert peak == 3
    assert workers.busy == 0
    workers.close()


def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    workers = Workers("test", 1)

    def fail() -> None:
        raise FileNotFoundError(2, "gone")

    async def main() -> str:
        with pytest.raises(FileNotFoundError):
            await workers.run(fail)
        return await workers.run(str.upper, "still working")

    assert trio.run(main) == "STILL WORKING"
    workers.close()


def test_the_event_loop_runs_while_a_call_blocks() -> None:
    workers = Workers("test", 1)
    ticks = 0

    async def main() -> None:
        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await workers.run(time.sleep, 0.3)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert ticks >= 10  # about 30 while the call slept; none if it had blocked the loop
    workers.close()


def test_a_cancelled_caller_still_gets_its_call_finished() -> None:
    """As with trio.to_thread.run_sync: the call cannot be abandoned half-way (its thread may
    hold a file descriptor the caller closes next); the caller sees the result, and the
    cancellation at its next checkpoint."""
    workers = Workers("test", 1)
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    async def main() -> None:
        got = None
        with trio.move_on_after(0.05) as scope:
            got = await workers.run(slow)
            assert finished.is_set()
            await trio.sleep(0)  # the next checkpoint delivers the cancellation
            raise AssertionError("not cancelled")
        assert scope.cancelled_caught
        assert got == "done"

    trio.run(main)
    workers.close()


def test_a_thread_keeps_nothing_of_a_finished_call() -> None:
    """An idle thread must not hold the last call's arguments or result: that would pin their
    memory (a block, a part) and make a reused block buffer look still in use."""
    workers = Workers("test", 1)

    class Payload:
        pass

    def another(p: Payload) -> Payload:
        return Payload()

    async def main() -> tuple[weakref.ref[Payload], weakref.ref[Payload]]:
        argument = Payload()
        result = await workers.run(another, argument)
        refs = weakref.ref(result), weakref.ref(argument)
        del result, argument
        await trio.sleep(0.2)  # the thread is back waiting for work
        return refs

    try:
        returned, passed = trio.run(main)
        assert returned() is None, "the thread still holds the last result"
        assert passed() is None, "the thread still holds the last arguments"
    finally:
        workers.close()


def test_a_thread_that_cannot_start_leaves_no_call_counted_and_runs_it_on_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process out of threads: a call that would have started a second thread waits for
    the first and runs (its arguments may own a descriptor only the call closes); with no
    thread at all, the call fails, and nothing stays counted as busy."""
    workers = Workers("test", 2)
    real_start = threading.Thread.start
    refuse = threading.Event()

    def start(thread: threading.Thread) -> None:
        if refuse.is_set():
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)

    async def main() -> list[str]:
        out: list[str] = []

        async def one(word: str) -> None:
            out.append(await workers.run(lambda: (time.sleep(0.1), word)[1]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "first")
            await trio.sleep(0.02)
            refuse.set()  # (the second call would start a second thread)
            nursery.start_soon(one, "second")
        return out

    assert trio.run(main) == ["first", "second"]
    assert workers.busy == 0
    workers.close()

    empty = Workers("test", 2)

    async def refused() -> None:
        with pytest.raises(RuntimeError):
            await empty.run(str.upper, "never")

    trio.run(refused)
    assert empty.busy == 0 and empty.oldest_call_age() == 0.0
