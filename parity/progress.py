"""Progress of a long phase (training, finite differences): tqdm bars on stderr.

A phase reports through a callback ``progress(event: ProgressEvent)``; the CLI's callback
is :data:`print_progress`, a :class:`TqdmProgress` that draws one tqdm bar per phase
(https://tqdm.github.io), redrawn at most every ``MIN_INTERVAL`` seconds so CI logs stay
short. The callback runs in the dtype's child process, so it is picklable (a small
module-level class; its open bars are not pickled). ``progress=None`` reports nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

MIN_INTERVAL = 5.0  # seconds between redraws of one bar (plus its end): short CI logs


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units (``unit``: step, point) of the phase ``description``,
    e.g. ``"[training zhou float64] scratch"``."""

    description: str
    done: int
    total: int
    unit: str = "step"


class TqdmProgress:
    """A progress callback drawing one tqdm bar on stderr per phase ``description``.

    A bar opens at a phase's first event and closes when ``done`` reaches ``total``.
    Picklable: the open bars stay in the process that draws them.
    """

    def __init__(self, min_interval: float = MIN_INTERVAL):
        self.min_interval = min_interval
        self._bars: dict[str, tqdm] = {}

    def __getstate__(self) -> dict:
        return {"min_interval": self.min_interval}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["min_interval"])

    def __call__(self, event: ProgressEvent) -> None:
        bar = self._bars.get(event.description)
        if bar is None:
            bar = self._bars[event.description] = tqdm(
                total=event.total, desc=event.description, unit=event.unit,
                file=sys.stderr, mininterval=self.min_interval, dynamic_ncols=True,
            )  # fmt: skip
        bar.update(event.done - bar.n)
        if event.done >= event.total:
            bar.close()
            del self._bars[event.description]


print_progress = TqdmProgress()  # the CLI's callback


def phase(progress, description: str, total: int, unit: str = "step") -> Callable[[int], None]:
    """``report(done)``: sends ``ProgressEvent(description, done, total, unit)`` to
    ``progress`` (a callable, or None: a no-op). ``done`` counts from 0 up to ``total``."""
    if progress is None:
        return lambda done: None

    def report(done: int) -> None:
        progress(ProgressEvent(description, int(done), int(total), unit))

    return report
