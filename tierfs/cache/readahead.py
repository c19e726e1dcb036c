"""Sequential-reader detection and a read-ahead window that grows.

The kernel's own read-ahead is per open file and capped by the mount's read_ahead setting; to
keep a high-latency store busy, tierfs fetches whole blocks further ahead. Streams are tracked
per open handle, several per handle, so two processes reading one file (through one shared
descriptor or two) each look sequential: a read that continues where one of the handle's streams
stopped extends that stream, any other read starts a new one (the oldest is forgotten).
"""

from __future__ import annotations

import dataclasses

#: Streams remembered per handle.
STREAMS = 4


@dataclasses.dataclass
class Stream:
    #: The last block this stream read.
    block: int
    #: Blocks to keep fetched ahead of it.
    window: int


class ReadAhead:
    def __init__(self, max_window: int) -> None:
        self.max_window = max(1, max_window)
        self._streams: list[Stream] = []

    def advance(self, first: int, last: int) -> range:
        """A read covered blocks ``first..last``: the blocks to have fetched ahead of it."""
        for i, stream in enumerate(self._streams):
            if stream.block <= first <= stream.block + 1:
                if last > stream.block:  # moved on to a new block: widen the window
                    stream.window = min(max(1, stream.window * 2), self.max_window)
                stream.block = max(stream.block, last)
                self._streams.append(self._streams.pop(i))  # most recently used last
                return range(last + 1, last + 1 + stream.window)
        self._streams.append(Stream(last, 1 if first == 0 else 0))
        del self._streams[:-STREAMS]
        # A read from the very start of a file is a sequential reader until shown otherwise.
        return range(last + 1, last + 1 + self._streams[-1].window)
