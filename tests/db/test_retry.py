"""The pure retry rule, as a table."""

from __future__ import annotations

import itertools

import pytest

from sqlgate._core.retry import MAX_POOLED_TRIES, Decision, Phase, Source, decide, plan


def test_plan_is_gos_two_pooled_then_fresh() -> None:
    assert MAX_POOLED_TRIES == 2
    assert plan(True) == (Source.POOLED, Source.POOLED, Source.FRESH)
    assert plan(False) == (Source.POOLED,)


@pytest.mark.parametrize(
    ("dead", "phase", "in_tx", "retry"),
    list(itertools.product([False, True], list(Phase), [False, True], [False, True])),
)
def test_decide_table(dead: bool, phase: Phase, in_tx: bool, retry: bool) -> None:
    d = decide(dead=dead, phase=phase, in_tx=in_tx, retry=retry)
    # A SQL error never discards; a dead link always does.
    assert d.discard is dead
    # Retried only: dead, before sending, outside a transaction, retry allowed.
    expected = dead and phase is Phase.CHECKOUT and not in_tx and retry
    assert d == Decision(discard=dead, retry=expected)


def test_after_sending_never_retried() -> None:
    assert decide(dead=True, phase=Phase.SENT, in_tx=False, retry=True).retry is False
