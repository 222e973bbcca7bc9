"""Time the layout diagnosis (``parity.diagnosis.layout``) on failing and passing runs.

    python benchmarks/bench_diagnosis.py

Each case is ``parity run``'s checks of one model (float64, in this process, the
default 32 images, at the ``random`` state where the layout diagnosis runs), a bug
planted or not. Reported: the run's wall time, the time spent choosing the layers to
search (``failing_layers``, the only work on a passing run) and in the search itself
(``layout_rows``), and what it named. A script, not a test: timings are never asserted.
"""

from __future__ import annotations

import os
import time

from parity import catalog, runner
from parity.diagnosis import layout
from parity.plant import ScaleOutput

CASES = [
    ("zhou", "correct", ()), ("two-conv", "correct", ()), ("nhwc-odd", "correct", ()),
    *[(catalog.BY_NAME[n].model, n, catalog.hooks_of(catalog.BY_NAME[n]))
      for n in ("true-convolution", "filters-reshape-not-transpose", "chw-rows-not-permuted",
                "pad-all-axes", "off-by-one-window")],
    ("two-conv", "conv2d_1 output x1.5 (no candidate fits)", (ScaleOutput("conv2d_1", 1.5),)),
    ("nhwc-odd", "conv2d_2 output x1.5 (no candidate fits)", (ScaleOutput("conv2d_2", 1.5),)),
]  # fmt: skip


def _timed(name: str, spent: list):
    original = getattr(layout, name)

    def timed(*args):
        start = time.perf_counter()
        try:
            return original(*args)
        finally:
            spent.append(time.perf_counter() - start)

    return original, timed


def main() -> None:
    from reference import backend

    backend.configure("float64", 0)
    print(f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("model     case                                      run s  choose ms  search s  named")
    for model, case, hooks in CASES:
        choose, search = [], []
        saved = [_timed("failing_layers", choose), _timed("layout_rows", search)]
        layout.failing_layers, layout.layout_rows = saved[0][1], saved[1][1]
        checks = ("forward", "gradients", "isolation", "diagnosis")
        config = runner.RunConfig(models=(model,), states=("random",), model_hooks=hooks,
                                  dtypes=("float64",), checks=checks)  # fmt: skip
        try:
            start = time.perf_counter()
            results = runner.run(config, in_process=True)
            wall = time.perf_counter() - start
        finally:
            layout.failing_layers, layout.layout_rows = saved[0][0], saved[1][0]
            catalog.restore_globals()
        found = results.tables["diagnosis"]
        named = ", ".join(found[found.signature == layout.SIGNATURE]["transform"]) or "-"
        print(f"{model:9} {case:41} {wall:5.2f}  {1e3 * sum(choose):9.3f}  {sum(search):8.3f}"
              f"  {named}")  # fmt: skip


if __name__ == "__main__":
    main()
