"""The store's records refuse what the schema would refuse, where they are built, so that
a bad one never reaches a commit (where it would fail the whole batch, every retry)."""

from __future__ import annotations

import pytest

from pachyderm import Ref
from pachyderm.store import Change, NewEvent, Snapshot


def test_a_snapshot_at_version_zero_is_refused_where_it_is_built() -> None:
    with pytest.raises(ValueError, match="version 1 or later"):
        Snapshot(0, b"init")
    with pytest.raises(ValueError, match="version 1 or later"):
        Snapshot(-1, b"init")
    assert Snapshot(1, b"state").version == 1


def test_a_change_without_events_at_version_zero_cannot_carry_a_snapshot() -> None:
    ref = Ref.from_key("counter", "c")
    with pytest.raises(ValueError, match="version 1 or later"):
        Change(ref, 0, "c1", (), snapshot=Snapshot(0, b"init"))
    change = Change(ref, 0, "c1", [NewEvent("E", b"")], snapshot=Snapshot(1, b"s"))
    assert change.new_version == 1
