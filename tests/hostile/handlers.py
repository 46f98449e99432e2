"""Handlers of the hostile-input tests that worker processes import by name."""

from __future__ import annotations


def accept(body: bytes) -> None:
    """Take any body (the properties are what is under test)."""
    del body
