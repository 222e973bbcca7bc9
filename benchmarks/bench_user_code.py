"""How much of `parity check` is the user's own code: wall time inside the user's methods
against the run's wall time (TensorFlow's import excluded).

    python benchmarks/bench_user_code.py [PATH] [--epochs 1] [--api auto]

Runs what ``parity check PATH --dtypes float64 --epochs N`` runs, in this process
(``parity.runner.run(..., in_process=True)``: one dtype), with every method the user's
classes define (``forward``, ``backprop``, ``backward``, ...) and every function the API
names (``softmax_loss``) wrapped by a timer. Nested calls are counted once (a method
calling another of the user's methods). Prints the wall time of the run, the time inside
the user's code (finite differences and training included: they call it), the rest (the
harness: Keras, comparisons, reports not written) and the harness's share. Issue 13 aims
at a harness share of at most 25% on the blog's loop-style code. A script, not a test.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import tensorflow  # noqa: E402, F401  (imported first: its import is not the harness's cost)

from parity import runner  # noqa: E402
from scratch import user_code  # noqa: E402

INSIDE = {"seconds": 0.0, "calls": 0, "depth": 0}


def _timed(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if INSIDE["depth"]:
            return function(*args, **kwargs)
        INSIDE["depth"] += 1
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            INSIDE["seconds"] += time.perf_counter() - start
            INSIDE["calls"] += 1
            INSIDE["depth"] -= 1

    return wrapper


def _timing_load(original):
    """``user_code.load`` whose classes' own methods and functions are timed."""

    def load(code):
        found = original(code)
        for name, obj in found.items():
            if isinstance(obj, type):
                for attribute, value in list(vars(obj).items()):
                    if callable(value) and not attribute.startswith("__"):
                        setattr(obj, attribute, _timed(value))
            else:
                found[name] = _timed(obj)
        return found

    return load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("path", nargs="?", default="examples/blog")
    parser.add_argument("--api", default="auto")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=1000)
    args = parser.parse_args()
    user_code.load = _timing_load(user_code.load)
    code = user_code.locate(args.path, args.api)
    training = runner.TrainingOptions(epochs=args.epochs, train_size=args.train_size,
                                      test_size=1000) if args.epochs else None  # fmt: skip
    config = runner.RunConfig(models=(code.name,), dtypes=("float64",), training=training,
                              user_code=(code,))  # fmt: skip
    start = time.perf_counter()
    results = runner.run(config, in_process=True)
    wall = time.perf_counter() - start
    inside, rest = INSIDE["seconds"], wall - INSIDE["seconds"]
    print(f"{args.path} ({code.api}), float64, --epochs {args.epochs}: exit "
          f"{results.exit_code}, {len(results.summary)} checks, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"  wall (TensorFlow imported before)  {wall:8.1f} s")
    print(f"  inside the user's code             {inside:8.1f} s  ({INSIDE['calls']:,} calls)")
    print(f"  the harness (the rest)             {rest:8.1f} s  ({rest / wall:.0%} of wall)")


if __name__ == "__main__":
    main()
