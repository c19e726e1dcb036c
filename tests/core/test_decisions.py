"""The core's pure decisions, without I/O: placement (warm, cold, or stream now) and the
open-file state machine (which moves are allowed, and what a state requires)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tierfs.core.openfile import (TRANSITIONS, UNPUBLISHED, DataState, IllegalTransition,
                                  OpenFile)
from tierfs.write.placement import COLD, NONE, WARM, Placement

MiB = 1024 * 1024
S = DataState


def placement(threshold: int = 10 * MiB, stream_after: int | None = None,
              rules: tuple[tuple[str, str], ...] = ()) -> Placement:
    return Placement(threshold, stream_after, rules)


# -- placement ----------------------------------------------------------------------------

def test_the_first_rule_that_matches_pins_a_path() -> None:
    p = placement(rules=(("checkpoints/**", "cold"), ("checkpoints/small/*", "warm"),
                         ("*.tmp", "warm")))
    assert p.rule_for(b"checkpoints/a/model.pt") == COLD
    assert p.rule_for(b"checkpoints/small/x") == COLD  # (the first match wins)
    assert p.rule_for(b"scratch.tmp") == WARM
    assert p.rule_for(b"data/x.bin") == NONE
    assert p.rule_for(None) == NONE  # unlinked: no path, no rule


def test_a_rule_matches_names_that_are_not_utf8() -> None:
    p = placement(rules=(("raw/*", "cold"),))
    assert p.rule_for(b"raw/\xff\xfe.bin") == COLD


def test_a_file_streams_once_past_the_threshold() -> None:
    p = placement(threshold=10 * MiB)
    assert not p.streams(NONE, 10 * MiB - 1, 10 * MiB - 1)
    assert p.streams(NONE, 10 * MiB, 10 * MiB)
    assert p.streams(NONE, 10 * MiB, 0)  # (written out of order: size decides)


def test_stream_after_starts_early_only_for_a_file_written_in_order() -> None:
    p = placement(threshold=100 * MiB, stream_after=8 * MiB)
    assert p.streams(NONE, 8 * MiB, 8 * MiB)
    assert not p.streams(NONE, 8 * MiB, 4 * MiB)  # a hole: not in order
    assert not p.streams(NONE, 8 * MiB - 1, 8 * MiB - 1)


def test_a_file_pinned_warm_never_streams_and_one_pinned_cold_always_does() -> None:
    p = placement(threshold=MiB, stream_after=MiB)
    assert not p.streams(WARM, 100 * MiB, 100 * MiB)
    assert p.streams(COLD, 1, 1)
    assert not p.streams(COLD, 0, 0)  # nothing written yet


def test_where_a_finished_file_belongs() -> None:
    p = placement(threshold=10 * MiB)
    assert not p.belongs_cold(NONE, 10 * MiB - 1)  # streamed early, small in the end
    assert p.belongs_cold(NONE, 10 * MiB)
    assert p.belongs_cold(COLD, 0)
    assert not p.belongs_cold(WARM, 100 * MiB)


@given(threshold=st.integers(4096, 2**40), size=st.integers(0, 2**41),
       rule=st.sampled_from([NONE, WARM, COLD]))
def test_a_file_that_streams_without_stream_after_belongs_in_the_bucket(
        threshold: int, size: int, rule: str) -> None:
    """Without early streaming, a file streamed while written is one that belongs in the
    bucket at that size: its close never brings it back to the warm tier."""
    p = placement(threshold=threshold)
    if p.streams(rule, size, size):
        assert p.belongs_cold(rule, size)


# -- the open-file state machine ------------------------------------------------------------

def staged_file() -> OpenFile:
    r, w = os.pipe()  # any descriptor stands for a staging file here
    os.close(r)
    data = OpenFile(staging_id="s", staging_fd=w)
    data.to(S.STAGED)
    return data


def close(data: OpenFile) -> None:
    data.close_fds()


def test_every_state_but_retired_can_be_retired_and_retired_is_final() -> None:
    for state, allowed in TRANSITIONS.items():
        if state is not S.RETIRED:
            assert S.RETIRED in allowed or state is S.PUBLISHING  # (a publish ends first)
    assert TRANSITIONS[S.RETIRED] == frozenset()


def test_a_move_outside_the_table_raises() -> None:
    data = OpenFile()
    with pytest.raises(IllegalTransition):
        data.to(S.PUBLISHING)  # nothing staged, nothing to publish
    with pytest.raises(IllegalTransition):
        data.to(S.DIRTY)  # clean -> dirty skips staging
    data.to(S.RETIRED)
    with pytest.raises(IllegalTransition):
        data.to(S.RETIRED)


def test_a_state_that_contradicts_the_data_raises() -> None:
    data = OpenFile()
    with pytest.raises(IllegalTransition):
        data.to(S.STAGED)  # nothing is staged
    data = staged_file()
    try:
        with pytest.raises(IllegalTransition):
            data.to(S.STREAMING)  # no upload
    finally:
        close(data)


def test_a_change_makes_staged_data_dirty_and_a_publish_cleans_it() -> None:
    data = staged_file()
    try:
        assert not data.dirty
        data.changed()
        assert data.state is S.DIRTY and data.dirty
        data.changed()  # (again: no move)
        assert data.state is S.DIRTY
        data.to(S.PUBLISHING)
        assert data.dirty  # not home until the publish is done
        data.to(S.STAGED)  # published by copy: staging stays, nothing to publish
        assert not data.dirty
    finally:
        close(data)


def test_a_failed_publish_stays_unpublished_until_the_next_try() -> None:
    data = staged_file()
    try:
        data.changed()
        data.to(S.PUBLISHING)
        data.to(S.FAILED)
        assert data.dirty
        data.changed()  # a new write after the failure
        assert data.state is S.DIRTY
        data.to(S.PUBLISHING)
        data.to(S.FAILED)
        data.to(S.PUBLISHING)  # the next close tries again
        data.to(S.STAGED)
    finally:
        close(data)


def test_unpublished_states_are_exactly_those_with_data_not_home() -> None:
    assert UNPUBLISHED == {S.DIRTY, S.STREAMING, S.PUBLISHING, S.FAILED}


@given(st.lists(st.sampled_from(list(DataState)), max_size=30))
def test_any_sequence_of_moves_keeps_the_state_within_the_table(moves: list[DataState]
                                                                ) -> None:
    data = staged_file()
    try:
        for new in moves:
            before = data.state
            try:
                data.to(new)
            except IllegalTransition:
                assert data.state is before  # refused moves change nothing
                continue
            assert new in TRANSITIONS[before]
    finally:
        close(data)
