"""The pool of block buffers: a buffer comes back for reuse only when no reader holds a view
of it, since reusing it then would change bytes under that reader."""

from __future__ import annotations

from tierfs.cache.buffers import BufferPool

SIZE = 64 * 1024


def test_an_unshared_buffer_is_reused() -> None:
    pool = BufferPool(SIZE, keep=2)
    buf = pool.take()
    assert len(buf) == SIZE
    assert pool.give(buf)
    assert pool.take() is buf


def test_a_buffer_under_a_view_is_not_reused() -> None:
    pool = BufferPool(SIZE, keep=2)
    buf = pool.take()
    view = memoryview(buf)[10:20]  # a reply being built from this block
    assert not pool.give(buf)
    assert pool.free == 0
    view.release()
    del view
    assert pool.give(buf)


def test_a_view_of_a_view_also_counts() -> None:
    pool = BufferPool(SIZE, keep=2)
    buf = pool.take()
    outer = memoryview(buf)
    inner = outer[5:9]
    outer.release()
    del outer
    assert not pool.give(buf)  # inner still reads buf's memory
    inner.release()
    del inner
    assert pool.give(buf)


def test_only_its_own_buffers_and_at_most_keep() -> None:
    pool = BufferPool(SIZE, keep=1)
    assert not pool.give(bytes(SIZE))
    assert not pool.give(BufferPool(2 * SIZE, keep=1).take())
    first, second = pool.take(), pool.take()
    assert first is not second
    assert pool.give(first)
    assert not pool.give(second)  # the pool is full: this one goes back to the system
    assert pool.free == 1


def test_filled_buffers_are_taken_before_new_ones_are_made() -> None:
    pool = BufferPool(SIZE, keep=3)
    pool.fill(2)
    assert pool.free == 2
    pool.fill(10)  # never past keep
    assert pool.free == 3
    made = [pool.take() for _ in range(3)]
    assert pool.free == 0 and len({id(b) for b in made}) == 3
    extra = pool.take()  # the pool is empty: a new one
    assert all(extra is not b for b in made)
