"""Placement: which tier a file's data belongs on, decided from numbers and paths alone.

A pure decision, with no I/O and no state of its own, so that it can be tested on its own and
so that every path that needs it asks the same question: a writer's file growing past the
threshold (stream it to the bucket now, or not before the writer is done?), a close (does a
file that was streamed early belong on the warm tier after all?), recovery finishing a
crashed file.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os

from tierfs.config import Config


#: What a config path rule says of a file (``checkpoints/** -> cold``): as in the config.
Rule = str
NONE, WARM, COLD = "", "warm", "cold"


@dataclasses.dataclass(frozen=True)
class Placement:
    #: Size from which a file's data belongs in the bucket (``large_file_threshold``).
    threshold: int
    #: Size from which a file written in order starts streaming early (``stream_after``).
    stream_after: int | None
    #: (glob, tier) pairs, first match wins.
    rules: tuple[tuple[str, str], ...]
    #: The named root whose files these are (``Config.rules_root``; "" for a single warm
    #: tier): the rules see a path of the root's under its name, as the mount shows it.
    root: str = ""

    @classmethod
    def of(cls, config: Config) -> Placement:
        return cls(config.large_file_threshold, config.stream_after, config.rules,
                   config.rules_root)

    def rule_for(self, path: bytes | None) -> Rule:
        """The tier a path rule pins a file at ``path`` to (NONE without a path or a match)."""
        if path is None or not self.rules:
            return NONE
        text = os.fsdecode(path)
        if self.root:
            text = f"{self.root}/{text}" if text else self.root
        for pattern, tier in self.rules:
            if fnmatch.fnmatchcase(text, pattern):
                return tier
        return NONE

    def stream_from(self, rule: Rule, in_order: bool) -> int | None:
        """The size from which a file being written streams to the bucket (None: never). A
        file pinned to the bucket streams from its first byte; one written in order may start
        at ``stream_after``, before it is known to be large, so that the upload overlaps the
        writing."""
        if rule == WARM:
            return None
        start = 1 if rule == COLD else self.threshold
        if self.stream_after is not None and in_order:
            start = min(start, self.stream_after)
        return start

    def streams(self, rule: Rule, size: int, written: int, rewriting: bool = False) -> bool:
        """Whether a file of ``size`` bytes, ``written`` of them in order from the start,
        should be streaming to the bucket now.

        ``rewriting``: a writer is still changing a file staged whole from its object (a cold
        file opened without ``O_TRUNC``). Such a file never streams then, whatever its size or
        rule: streamed parts leave staging and cannot be changed any more, while any byte of
        a rewritten file may still be, so it goes up whole once the writer is done (its
        publish asks again without ``rewriting``). The price is hot disk for the whole file,
        which staging checks before it downloads the object."""
        if rewriting:
            return False
        start = self.stream_from(rule, written == size)
        return start is not None and size >= start

    def belongs_cold(self, rule: Rule, size: int) -> bool:
        """Where a finished file of ``size`` bytes belongs: the bucket (True) or the warm tier.
        A file streamed early that ended small goes back to the warm tier, unless a rule pins
        it to the bucket."""
        if rule == COLD:
            return True
        if rule == WARM:
            return False
        return size >= self.threshold
