"""PoolConfig: one frozen, validated record of every pool knob."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from sqlgate._core import FOREVER, PoolConfig, PoolCore

#: A valid value other than the default, for each knob.
OTHER: dict[str, Any] = {
    "max_open": 5,
    "max_idle": 3,
    "min_idle": 1,
    "max_connecting": 2,
    "conn_max_lifetime": 60.0,
    "conn_max_idle_time": 30.0,
    "max_waiting": 7,
    "circuit_after": 0,
    "acquire_timeout": 0.0,
    "timeout_at_capacity_only": True,
    "rollback_on_return": False,
    "leak_threshold": 2.0,
    "name": "other",
}


def test_every_knob_is_listed_here() -> None:
    assert {f.name for f in dataclasses.fields(PoolConfig)} == set(OTHER)


@pytest.mark.parametrize("knob", sorted(OTHER))
def test_the_snapshot_tells_apart_cores_that_differ_in_any_knob(knob: str) -> None:
    # The exhaustive search dedupes on snapshot(): a knob it left out would
    # merge states that answer inputs differently.
    plain: PoolCore[object] = PoolCore(PoolConfig())
    other: PoolCore[object] = PoolCore(PoolConfig(**{knob: OTHER[knob]}))
    assert plain.snapshot() != other.snapshot()


def test_frozen() -> None:
    config = PoolConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_open = 3  # type: ignore[misc]


def test_values_are_kept_normalized() -> None:
    config = PoolConfig(
        max_idle=-4,
        conn_max_lifetime=math.inf,
        conn_max_idle_time=FOREVER * 2,
        acquire_timeout=None,
        leak_threshold=10**400,
    )
    assert config.max_idle == 0
    assert config.conn_max_lifetime is None
    assert config.conn_max_idle_time is None
    assert config.leak_threshold is None
    assert config == PoolConfig(max_idle=0, acquire_timeout=None)
    assert PoolConfig(conn_max_lifetime=5) == PoolConfig(conn_max_lifetime=5.0)


def test_idle_cap_is_max_idle_capped_at_max_open() -> None:
    assert PoolConfig(max_idle=5).idle_cap == 5
    assert PoolConfig(max_open=2, max_idle=5).idle_cap == 2
    assert PoolConfig(max_open=9, max_idle=5).idle_cap == 5


def test_replace_validates_again() -> None:
    with pytest.raises(ValueError, match=r"^max_open must be >= 0, got -1$"):
        dataclasses.replace(PoolConfig(), max_open=-1)


def test_min_idle_above_the_cap_is_refused_naming_both() -> None:
    with pytest.raises(
        ValueError,
        match=r"^min_idle=3 exceeds the idle cap 2 \(max_idle=2, max_open=0\)$",
    ):
        PoolConfig(min_idle=3)


def test_lowering_the_cap_lowers_min_idle_instead_of_refusing() -> None:
    config = PoolConfig(max_open=4, max_idle=4, min_idle=3)
    assert config.with_max_open(2).min_idle == 2
    assert config.with_max_idle(1).min_idle == 1
    assert config.with_max_open(0).min_idle == 3  # unlimited: the cap is max_idle
    with pytest.raises(TypeError, match=r"^max_open must be an int, got 1\.5$"):
        config.with_max_open(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("knob", "value", "message"),
    [
        ("acquire_timeout", -1, "acquire_timeout must be >= 0 seconds or None, got -1"),
        ("leak_threshold", 0, "leak_threshold must be > 0 seconds or None, got 0"),
        (
            "timeout_at_capacity_only",
            1,
            "timeout_at_capacity_only must be a bool, got 1",
        ),
        ("rollback_on_return", "yes", "rollback_on_return must be a bool, got 'yes'"),
    ],
)
def test_shell_knobs_are_validated_too(knob: str, value: object, message: str) -> None:
    knobs: dict[str, Any] = {knob: value}
    with pytest.raises((TypeError, ValueError)) as info:
        PoolConfig(**knobs)
    assert str(info.value) == message
