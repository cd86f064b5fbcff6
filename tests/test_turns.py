"""The turn and interruption state machine."""

from __future__ import annotations

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
