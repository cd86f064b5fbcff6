"""The turn and interruption state machine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeflow.turns import FINAL, TRANSITIONS, Action, Input, Transition, Turn, TurnMachine

LIVE_INPUTS = [i for i in Input if i not in (Input.CLOSE, Input.FAIL)]


def run(*inputs: Input) -> tuple[TurnMachine, list[tuple[Action, ...]]]:
    machine = TurnMachine()
    return machine, [machine.feed(i) for i in inputs]


def test_table_covers_every_live_state_and_input() -> None:
    live = [s for s in Turn if s not in FINAL]
    assert sorted(TRANSITIONS, key=lambda s: s.value) == sorted(live, key=lambda s: s.value)
    for state in live:
        assert set(TRANSITIONS[state]) == set(LIVE_INPUTS), state


def test_a_plain_voice_turn() -> None:
    machine, actions = run(Input.SPEECH_STARTED, Input.SPEECH_STOPPED, Input.COMMITTED,
                           Input.RESPONSE_STARTED, Input.RESPONSE_DONE)
    assert machine.history == [Turn.IDLE, Turn.LISTENING, Turn.THINKING, Turn.SPEAKING,
                               Turn.IDLE]
    assert actions[2:] == [(), (), ()]


def test_barge_in_while_speaking_cancels_and_interrupts() -> None:
    machine, actions = run(Input.REQUESTED, Input.RESPONSE_STARTED, Input.SPEECH_STARTED)
    assert machine.state is Turn.LISTENING
    assert actions[-1] == (Action.CANCEL, Action.INTERRUPT)
    # the cancelled response ends while the caller holds the floor
    assert machine.feed(Input.RESPONSE_DONE) == ()
    assert machine.state is Turn.LISTENING


def test_a_response_starting_while_the_caller_speaks_is_cancelled() -> None:
    machine, actions = run(Input.SPEECH_STARTED, Input.RESPONSE_STARTED)
    assert machine.state is Turn.LISTENING
    assert actions[-1] == (Action.CANCEL,)


def test_tool_round_trip() -> None:
    machine, _ = run(Input.COMMITTED, Input.RESPONSE_STARTED, Input.TOOL_PENDING,
                     Input.RESPONSE_DONE)
    assert machine.state is Turn.TOOLS and machine.busy
    machine.feed(Input.REQUESTED)
    assert machine.state is Turn.THINKING
    machine.feed(Input.RESPONSE_STARTED)
    machine.feed(Input.RESPONSE_DONE)
    assert machine.state is Turn.IDLE and not machine.busy


def test_interrupt_from_the_app_cancels_and_goes_idle() -> None:
    machine, actions = run(Input.REQUESTED, Input.RESPONSE_STARTED, Input.INTERRUPT)
    assert machine.state is Turn.IDLE
    assert actions[-1] == (Action.CANCEL, Action.INTERRUPT)


def test_on_change_sees_only_real_changes() -> None:
    seen: list[Transition] = []
    machine = TurnMachine(on_change=seen.append)
    machine.feed(Input.SPEECH_STOPPED)  # idle -> idle: no change
    machine.feed(Input.COMMITTED)
    assert seen == [Transition(Turn.IDLE, Turn.THINKING, Input.COMMITTED, ())]


def test_final_states_ignore_everything() -> None:
    machine = TurnMachine()
    machine.fail()
    assert machine.state is Turn.ERROR
    assert machine.feed(Input.SPEECH_STARTED) == ()
    machine.close()
    assert machine.state is Turn.ERROR
    other = TurnMachine()
    other.close()
    assert other.feed(Input.REQUESTED) == () and other.state is Turn.CLOSED


@given(st.lists(st.sampled_from(list(Input)), max_size=40))
def test_any_sequence_keeps_the_machine_consistent(inputs: list[Input]) -> None:
    machine = TurnMachine()
    for event in inputs:
        before = machine.state
        actions = machine.feed(event)
        if before in FINAL:
            assert machine.state is before and actions == ()
        elif event is Input.CLOSE:
            assert machine.state is Turn.CLOSED
        elif event is Input.FAIL:
            assert machine.state is Turn.ERROR
        else:
            assert (machine.state, actions) == TRANSITIONS[before][event]
        # a barge-in always hands the floor to the caller
        if before not in FINAL and event is Input.SPEECH_STARTED:
            assert machine.state is Turn.LISTENING
    assert machine.history[0] is Turn.IDLE
    assert all(a is not b for a, b in zip(machine.history, machine.history[1:], strict=False))


# Every (state, input) pair, written out from the rules rather than read from
# the table, so a wrong entry in TRANSITIONS fails here:
# - caller speech always hands the floor to the caller, and barges in unless
#   the caller already held it;
# - a commit always asks for an answer; an explicit request does too, except
#   while an answer is being spoken (it is answered after that one);
# - a response starting is the agent speaking, unless the caller holds the
#   floor (then it is unwanted and cancelled);
# - a response ending frees the floor, unless the caller holds it or tool
#   results are still awaited;
# - an app interrupt barges in and frees the floor (the caller keeps it).
_I_, _L, _T, _S, _W = Turn.IDLE, Turn.LISTENING, Turn.THINKING, Turn.SPEAKING, Turn.TOOLS
_B = (Action.CANCEL, Action.INTERRUPT)
EXPECTED: dict[tuple[Turn, Input], tuple[Turn, tuple[Action, ...]]] = {
    (_I_, Input.SPEECH_STARTED): (_L, _B),
    (_L, Input.SPEECH_STARTED): (_L, ()),
    (_T, Input.SPEECH_STARTED): (_L, _B),
    (_S, Input.SPEECH_STARTED): (_L, _B),
    (_W, Input.SPEECH_STARTED): (_L, _B),
    (_I_, Input.SPEECH_STOPPED): (_I_, ()),
    (_L, Input.SPEECH_STOPPED): (_L, ()),
    (_T, Input.SPEECH_STOPPED): (_T, ()),
    (_S, Input.SPEECH_STOPPED): (_S, ()),
    (_W, Input.SPEECH_STOPPED): (_W, ()),
    (_I_, Input.COMMITTED): (_T, ()),
    (_L, Input.COMMITTED): (_T, ()),
    (_T, Input.COMMITTED): (_T, ()),
    (_S, Input.COMMITTED): (_T, ()),
    (_W, Input.COMMITTED): (_T, ()),
    (_I_, Input.REQUESTED): (_T, ()),
    (_L, Input.REQUESTED): (_T, ()),
    (_T, Input.REQUESTED): (_T, ()),
    (_S, Input.REQUESTED): (_S, ()),
    (_W, Input.REQUESTED): (_T, ()),
    (_I_, Input.RESPONSE_STARTED): (_S, ()),
    (_L, Input.RESPONSE_STARTED): (_L, (Action.CANCEL,)),
    (_T, Input.RESPONSE_STARTED): (_S, ()),
    (_S, Input.RESPONSE_STARTED): (_S, ()),
    (_W, Input.RESPONSE_STARTED): (_S, ()),
    (_I_, Input.RESPONSE_DONE): (_I_, ()),
    (_L, Input.RESPONSE_DONE): (_L, ()),
    (_T, Input.RESPONSE_DONE): (_I_, ()),
    (_S, Input.RESPONSE_DONE): (_I_, ()),
    (_W, Input.RESPONSE_DONE): (_W, ()),
    (_I_, Input.TOOL_PENDING): (_W, ()),
    (_L, Input.TOOL_PENDING): (_L, ()),
    (_T, Input.TOOL_PENDING): (_W, ()),
    (_S, Input.TOOL_PENDING): (_W, ()),
    (_W, Input.TOOL_PENDING): (_W, ()),
    (_I_, Input.INTERRUPT): (_I_, _B),
    (_L, Input.INTERRUPT): (_L, _B),
    (_T, Input.INTERRUPT): (_I_, _B),
    (_S, Input.INTERRUPT): (_I_, _B),
    (_W, Input.INTERRUPT): (_I_, _B),
}


def _reach(state: Turn) -> TurnMachine:
    """A machine brought to ``state`` by ordinary inputs (not by assignment)."""
    path = {
        Turn.IDLE: (),
        Turn.LISTENING: (Input.SPEECH_STARTED,),
        Turn.THINKING: (Input.COMMITTED,),
        Turn.SPEAKING: (Input.REQUESTED, Input.RESPONSE_STARTED),
        Turn.TOOLS: (Input.REQUESTED, Input.RESPONSE_STARTED, Input.TOOL_PENDING),
    }[state]
    machine, _ = run(*path)
    assert machine.state is state
    return machine


def test_expected_transitions_cover_every_pair() -> None:
    live = [s for s in Turn if s not in FINAL]
    assert set(EXPECTED) == {(s, i) for s in live for i in LIVE_INPUTS}


@pytest.mark.parametrize(
    ("state", "event"), list(EXPECTED), ids=[f"{s.value}-{i.value}" for s, i in EXPECTED]
)
def test_every_transition(state: Turn, event: Input) -> None:
    expected_state, expected_actions = EXPECTED[(state, event)]
    seen: list[Transition] = []
    machine = _reach(state)
    machine.on_change = seen.append
    actions = machine.feed(event)
    assert (machine.state, actions) == (expected_state, expected_actions)
    changed = expected_state is not state
    assert seen == ([Transition(state, expected_state, event, expected_actions)] if changed else [])
    assert machine.busy is (expected_state in (Turn.THINKING, Turn.SPEAKING, Turn.TOOLS))


@pytest.mark.parametrize("state", [s for s in Turn if s not in FINAL], ids=lambda s: s.value)
@pytest.mark.parametrize("final", [Input.CLOSE, Input.FAIL], ids=lambda i: i.value)
def test_close_and_fail_end_every_live_state(state: Turn, final: Input) -> None:
    machine = _reach(state)
    assert machine.feed(final) == ()
    assert machine.state is (Turn.CLOSED if final is Input.CLOSE else Turn.ERROR)
    for event in Input:
        assert machine.feed(event) == ()
    assert machine.state in FINAL
