"""Progress of a long training run: one line on stderr at most every few seconds."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

PROGRESS_EVERY_SECONDS = 5.0  # at most one progress line this often (plus phase ends)


@dataclass(frozen=True)
class ProgressEvent:
    """Where a long run is: ``done`` of ``total`` steps of one phase, and time spent."""

    model: str
    dtype: str
    phase: str  # scratch, keras fit, keras tape, evaluation
    done: int
    total: int
    elapsed: float  # seconds in this phase

    @property
    def rate(self) -> float:
        """Steps per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else float("nan")

    @property
    def remaining(self) -> float:
        """Estimated seconds left in this phase."""
        return (self.total - self.done) / self.rate if self.done else float("nan")

    def line(self) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"[training {self.model} {self.dtype}] {self.phase}: {self.done}/{self.total} steps "
            f"({pct:.0f}%), {self.rate:.0f} steps/s, {_duration(self.elapsed)} elapsed, "
            f"{_duration(self.remaining)} left"
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def print_progress(event: ProgressEvent) -> None:
    """The CLI's progress callback: one line on stderr (picklable: module level)."""
    print(event.line(), file=sys.stderr, flush=True)


class Throttle:
    """Calls ``progress`` at most every ``PROGRESS_EVERY_SECONDS``, and at the end.

    ``config``: anything with ``model`` and ``dtype`` (a ``TrainingConfig``).
    """

    def __init__(self, progress, config, phase: str, total: int):
        self.progress, self.config, self.phase, self.total = progress, config, phase, total
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.progress is None:
            return
        if done < self.total and now - self.last < PROGRESS_EVERY_SECONDS:
            return
        self.last = now
        self.progress(
            ProgressEvent(
                self.config.model, self.config.dtype, self.phase, done, self.total,
                now - self.start,
            )
        )  # fmt: skip
