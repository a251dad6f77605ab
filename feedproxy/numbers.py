"""Reading whole numbers from text people type: settings, gunicorn's variables, request parameters."""

from __future__ import annotations

from feedproxy.errors import InvalidValue

MAX_DIGITS = 9


def parse_whole_number(text: str, low: int, high: int) -> int:
    """The whole number ``text`` spells (ASCII digits, surrounding space ignored) if within [low, high].

    Raises InvalidValue (a ValueError) with the end of a sentence that starts with the value's name:
    "must be a whole number from 1 to 500" or "must be from 1 to 500, got 501".
    """
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_DIGITS:
        raise InvalidValue(f"must be a whole number from {low} to {high}, got {text[:40]!r}")
    value = int(digits)
    if not low <= value <= high:
        raise InvalidValue(f"must be from {low} to {high}, got {value}")
    return value
