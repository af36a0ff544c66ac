"""The recording rule of internal calls (`callrec.policy.internal_call_recording`), over
every pair of modes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callrec.policy import (
    CALLEE,
    CALLER,
    InvalidChoice,
    RecordingMode,
    internal_call_mode,
    internal_call_recording,
)

MODES = st.sampled_from(list(RecordingMode))


@given(MODES, MODES)
def test_the_strongest_mode_of_the_two_wins(caller: RecordingMode, callee: RecordingMode) -> None:
    rule = internal_call_recording(caller, callee)
    modes = {caller, callee}
    if RecordingMode.ALWAYS in modes:
        assert rule.mode is RecordingMode.ALWAYS
        assert rule.feature_code_parties == ()  # recorded from the answer, nothing toggles
    elif RecordingMode.ON_DEMAND in modes:
        assert rule.mode is RecordingMode.ON_DEMAND
        on_demand = {p for p, m in ((CALLER, caller), (CALLEE, callee)) if m == "on-demand"}
        assert set(rule.feature_code_parties) == on_demand  # a `never` party cannot start it
    else:
        assert rule == internal_call_recording("never", "never")
        assert rule.mode is RecordingMode.NEVER and rule.owner is None
    assert internal_call_mode(caller, callee) is rule.mode
    # Either way round, the call is recorded alike (only who owns it may differ).
    swapped = internal_call_recording(callee, caller)
    assert swapped.mode is rule.mode
    assert len(swapped.feature_code_parties) == len(rule.feature_code_parties)


@given(MODES, MODES)
def test_the_owner_is_a_party_whose_mode_decided(
    caller: RecordingMode, callee: RecordingMode
) -> None:
    rule = internal_call_recording(caller.value, callee.value)  # stored text works too
    if rule.mode is RecordingMode.NEVER:
        return
    owner_mode = caller if rule.owner == CALLER else callee
    assert owner_mode is rule.mode
    if caller is rule.mode:
        assert rule.owner == CALLER  # the caller on a tie
    if rule.feature_code_parties:
        assert rule.owner in rule.feature_code_parties  # the owner's phone is watched


def test_the_table() -> None:
    table = {
        ("never", "never"): ("never", None, ()),
        ("never", "on-demand"): ("on-demand", CALLEE, (CALLEE,)),
        ("on-demand", "never"): ("on-demand", CALLER, (CALLER,)),
        ("on-demand", "on-demand"): ("on-demand", CALLER, (CALLER, CALLEE)),
        ("always", "on-demand"): ("always", CALLER, ()),
        ("on-demand", "always"): ("always", CALLEE, ()),
        ("never", "always"): ("always", CALLEE, ()),
        ("always", "always"): ("always", CALLER, ()),
    }
    for (caller, callee), (mode, owner, parties) in table.items():
        rule = internal_call_recording(caller, callee)
        assert (rule.mode.value, rule.owner, rule.feature_code_parties) == (mode, owner, parties)


def test_a_value_that_is_not_a_mode_is_refused() -> None:
    with pytest.raises(InvalidChoice) as refused:
        internal_call_recording("sometimes", "never")
    assert refused.value.field == "mode"
