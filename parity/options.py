"""Command-line values shared by ``parity run``, ``parity check`` and ``parity selftest``.

Each parser takes the option's text and returns the value, or raises :class:`UsageError`
naming the option, the rule and the text received (the commands exit 2 on it). Standard
library only, so every command module can import it without importing another command.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad usage or input: exit code 2."""


def choices(option: str, text: str, allowed) -> tuple[str, ...]:
    """A comma-separated list of distinct names from ``allowed`` (at least one)."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    bad = [item for item in items if item not in allowed]
    if not items or bad or len(set(items)) != len(items):
        raise UsageError(
            f"Invalid value for argument `{option}`. Expected a comma-separated list of "
            f"distinct names from {', '.join(allowed)}. Received {option}={text!r}."
        )
    return tuple(items)


def integer(option: str, text: str, low: int, high: int | None) -> int:
    """An integer in ``[low, high]`` (``high=None``: no upper bound here)."""
    try:
        value = int(str(text))
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        rule = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise UsageError(
            f"Invalid value for argument `{option}`. Expected {rule}. Received {option}={text!r}."
        )
    return value


def positive(option: str, text: str) -> float:
    """A finite, strictly positive number."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise UsageError(f"Invalid value for argument `{option}`. Expected a finite, strictly "
                         f"positive number. Received {option}={text!r}.")  # fmt: skip
    return value
