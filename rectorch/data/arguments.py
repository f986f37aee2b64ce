"""Checks of constructor arguments that come from configs: one ValueError naming the key and the value."""

import numbers
from typing import Any

from rectorch.data.cells import short


def positive_int(key: str, value: Any, low: int = 1, nullable: bool = False) -> int | None:
    """``value`` when it is an integer of at least ``low`` (bool excluded; None if ``nullable``), else a ValueError."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        what = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{key} must be {what}{' or null' if nullable else ''}, got {short(value)}")
    return int(value)
