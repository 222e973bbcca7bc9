"""The start-up phase of a run: one process per dtype, each importing TensorFlow first.

``reference.backend.run_in_dtype_process`` configures each child (TensorFlow and Keras
imported, 6-19 s) before the run's own work starts, and holds the child's stderr back
meanwhile (``reference.backend.start_up_lines_filtered``), so the child cannot report
that phase itself: :func:`wait` speaks for it from the parent, until a child is ready
(it creates its file, then prints its own progress lines) or every child has ended.
"""

from __future__ import annotations

import time
from pathlib import Path

HEARTBEAT = 10.0  # seconds between "still importing" lines: no silent phase over ~10 s
POLL = 0.25  # seconds between looks at the children's ready files


def wait(ready: list[Path], futures: list, started: float, progress) -> None:
    """Until a file of ``ready`` exists or every future of ``futures`` is done, a line
    ``progress("importing TensorFlow: N s")`` every :data:`HEARTBEAT` seconds since
    ``started`` (``time.perf_counter()``). Lines, not a tqdm bar: the children's lines
    would land inside a bar still open."""
    beat = started + HEARTBEAT
    while not any(path.exists() for path in ready) and not all(f.done() for f in futures):
        if time.perf_counter() >= beat:
            progress(f"importing TensorFlow: {time.perf_counter() - started:.0f} s")
            beat += HEARTBEAT
        time.sleep(POLL)
