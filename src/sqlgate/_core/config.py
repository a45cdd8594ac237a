"""The pool's knobs: their defaults and their validation; no I/O.

Every check raises an error naming the knob and the value it was given.
"""

from __future__ import annotations

import math
import threading
from typing import Final

__all__ = [
    "CIRCUIT_AFTER",
    "FOREVER",
    "MAX_CONNECTING",
    "check_duration",
    "check_int",
]

#: Dials in flight at once, by default: chosen by measurement (docs/design.md).
MAX_CONNECTING: Final = 4
#: Default ``circuit_after``: consecutive failed dials that open the circuit.
CIRCUIT_AFTER: Final = 3
#: The longest duration a thread can wait for (s; ``threading.TIMEOUT_MAX``,
#: about 292 years on Linux). A duration knob or timeout above it means "no
#: limit", as ``math.inf`` does: no wait could last that long anyway, and a
#: lock's timed acquire refuses anything longer with ``OverflowError``.
FOREVER: Final = threading.TIMEOUT_MAX


def check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def check_duration(name: str, value: object, *, zero_ok: bool = False) -> float | None:
    """Validate a duration knob: None, ``math.inf`` (or > ``FOREVER``) mean no limit.

    Args:
        name: the knob's name, for the error message.
        value: what the caller passed.
        zero_ok: whether 0 is allowed (a timeout of 0 is; a lifetime of 0 is not).

    Returns:
        The value as a float, or None for "no limit" (None, ``math.inf``, or
        more seconds than a thread can wait: ``sys.maxsize`` and ``1e10``
        included, which a timed lock acquire would refuse).

    Raises:
        TypeError: not a number.
        ValueError: NaN, negative, or zero where zero makes no sense.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond any float: as far as infinity goes
        seconds = math.inf if value > 0 else -math.inf
    if math.isnan(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds or None, got {value!r}")
    return None if seconds > FOREVER else seconds
