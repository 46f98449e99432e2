"""Value checks for the plain-data (dict) form of topology objects (internal).

Each check returns the value or raises :class:`_Bad` with what is wrong; the caller turns
that into a :class:`~hutch._topology.TopologyDataError` naming the key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from hutch._checks import check_bool, check_float, check_int, check_str

__all__ = [
    "_Bad",
    "_check_bool",
    "_check_int",
    "_check_number",
    "_check_str",
    "_check_table",
    "_one_of",
    "_optional",
    "_short",
]


class _Bad(Exception):
    """A value of the wrong type (internal: becomes a :class:`TopologyDataError`)."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# The schema checks of from_dict() decide types with hutch._checks, the helpers every
# class uses, and word the refusal like a schema validator ("Input should be ...").
def _check_str(value: object) -> str:
    try:
        check_str("value", value)
    except TypeError:
        raise _Bad(f"Input should be a valid string, got {_short(value)}") from None
    return value  # type: ignore[return-value]  # checked above


def _check_bool(value: object) -> bool:
    try:
        return check_bool("value", value)
    except TypeError:
        shown = _short(value)
        raise _Bad(f"Input should be a valid boolean (true or false), got {shown}") from None


def _check_int(value: object) -> int:
    try:
        check_int("value", value)
    except TypeError:
        raise _Bad(f"Input should be a valid integer, got {_short(value)}") from None
    return value  # type: ignore[return-value]  # checked above (an int subclass stays itself)


def _check_number(value: object) -> float:
    try:
        check_float("value", value)
    except TypeError:
        raise _Bad(f"Input should be a valid number, got {_short(value)}") from None
    except ValueError:
        pass  # NaN, infinity: the constructor refuses them, naming the field
    return value  # type: ignore[return-value]  # checked above


def _check_table(value: object) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise _Bad(f"Input should be a table of names and values, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _Bad(f"names in a table should be strings, got {_short(key)}")
    return dict(value)


def _one_of(*values: str) -> Callable[[object], str]:
    shown = ", ".join(repr(v) for v in values[:-1]) + f" or {values[-1]!r}"

    def check(value: object) -> str:
        if isinstance(value, enum.Enum):
            value = value.value
        if not isinstance(value, str) or value not in values:
            raise _Bad(f"Input should be {shown}, got {_short(value)}")
        return value

    return check


def _optional(check: Callable[[object], object]) -> Callable[[object], object]:
    def optional(value: object) -> object:
        return None if value is None else check(value)

    return optional
