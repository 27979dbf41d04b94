"""The runner table of the ticket state machine: one step per non-terminal state, defined once."""

from __future__ import annotations

from billing_recon import pipeline
from billing_recon.domain.fsm import TERMINAL, State, allowed_targets
from billing_recon.steps.machine import AUTOMATIC, STEP_OF, Step, next_step


def test_every_non_terminal_state_has_exactly_one_step_and_terminal_states_none() -> None:
    assert {s for s in State if next_step(s) is not None} == set(State) - TERMINAL
    assert set(STEP_OF.values()) == set(Step)


def test_a_state_with_a_step_can_move_on() -> None:
    assert all(allowed_targets(state) for state in STEP_OF)


def test_the_plain_pipeline_runs_exactly_the_automatic_steps() -> None:
    assert set(pipeline.STEPS) == AUTOMATIC
    assert Step.DECIDE not in AUTOMATIC and Step.REFUND not in AUTOMATIC
