"""The namespace lock on its own: shared holders together, an exclusive holder alone and not
starved by a stream of shared ones, and a publish's own shared use inside its exclusive hold."""

from __future__ import annotations

import trio

from tierfs.core.nslock import NamespaceLock


def test_shared_holders_run_together_and_an_exclusive_one_waits_for_them() -> None:
    async def main() -> list[str]:
        lock = NamespaceLock()
        events: list[str] = []
        both_in = trio.Event()
        inside = 0

        async def reader(name: str) -> None:
            nonlocal inside
            async with lock.shared():
                inside += 1
                events.append(f"{name} in")
                if inside == 2:
                    both_in.set()
                await both_in.wait()  # would hang if shared holders excluded each other
                await trio.sleep(0.05)
                events.append(f"{name} out")
                inside -= 1

        async def writer() -> None:
            await both_in.wait()
            async with lock:
                events.append(f"writer in with {inside} readers")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, "a")
            nursery.start_soon(reader, "b")
            nursery.start_soon(writer)
        return events

    events = trio.run(main)
    assert events[-1] == "writer in with 0 readers"
    assert events.index("writer in with 0 readers") > events.index("a out")


def test_readers_arriving_after_a_waiting_writer_wait_for_it() -> None:
    async def main() -> list[str]:
        lock = NamespaceLock()
        events: list[str] = []
        first_in = trio.Event()

        async def first() -> None:
            async with lock.shared():
                first_in.set()
                await trio.sleep(0.1)
            events.append("first out")

        async def writer() -> None:
            await first_in.wait()
            async with lock:
                events.append("writer")

        async def late() -> None:
            await first_in.wait()
            await trio.sleep(0.02)  # the writer is waiting by now
            async with lock.shared():
                events.append("late")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            nursery.start_soon(writer)
            nursery.start_soon(late)
        return events

    assert trio.run(main) == ["first out", "writer", "late"]


def test_the_exclusive_holder_may_take_it_shared() -> None:
    async def main() -> bool:
        lock = NamespaceLock()
        with trio.fail_after(1):
            async with lock:
                async with lock.shared():
                    pass
            async with lock.shared():  # and it is free again afterwards
                async with lock.shared():
                    pass
            async with lock:
                return True

    assert trio.run(main)


def test_a_cancelled_exclusive_waiter_leaves_the_lock_usable() -> None:
    async def main() -> bool:
        lock = NamespaceLock()
        reader_in = trio.Event()
        release = trio.Event()

        async def reader() -> None:
            async with lock.shared():
                reader_in.set()
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await reader_in.wait()
            with trio.move_on_after(0.05) as scope:
                async with lock:
                    pass
            assert scope.cancelled_caught
            release.set()
        with trio.fail_after(1):
            async with lock:
                async with lock.shared():
                    return True

    assert trio.run(main)
