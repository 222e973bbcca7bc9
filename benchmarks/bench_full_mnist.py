"""Wall time of ``parity run`` on a full-size MNIST file (60,000 training images).

    python benchmarks/bench_full_mnist.py [--epochs 3] [--keras-path epoch] [--dtypes ...]

No full MNIST reaches this machine (the network sees only package registries), so the
script builds a Keras-style ``mnist.npz`` of full size by tiling the bundled 5,000
images (``x_train`` 60,000 and ``x_test`` 10,000, labels alike): fine for a timing, the
cost of a step does not depend on which digit it sees. It then runs
``parity run --data FILE --epochs N --train-size 60000 --test-size 10000`` in a
subprocess and prints the wall time, the exit code, the load average before and after,
and the run's training rows and verdict count from its console table. ``--keras-path fit`` times
``model.fit`` instead of the default whole-epoch ``tf.function``. A script, not a test:
timings are never asserted. The file is written to a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from parity.data import load_bundled

TRAIN, TEST = 60_000, 10_000


def write_full_size(path: str) -> None:
    """A Keras-layout ``mnist.npz`` of MNIST's full size, tiled from the bundled images."""
    bundled = load_bundled()
    images = np.concatenate([bundled.train_images, bundled.test_images])
    labels = np.concatenate([bundled.train_labels, bundled.test_labels])
    reps = -(-(TRAIN + TEST) // len(images))
    images, labels = np.tile(images, (reps, 1, 1)), np.tile(labels, reps)
    np.savez(path, x_train=images[:TRAIN], y_train=labels[:TRAIN],
             x_test=images[TRAIN:TRAIN + TEST], y_test=labels[TRAIN:TRAIN + TEST])  # fmt: skip


def load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--keras-path", default="epoch")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--models", default="zhou")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, "mnist.npz")
        write_full_size(data)
        command = [sys.executable, "-m", "parity.cli", "run", "--data", data, "--out", folder,
                   "--epochs", str(args.epochs), "--train-size", str(TRAIN),
                   "--test-size", str(TEST), "--keras-path", args.keras_path,
                   "--dtypes", args.dtypes, "--models", args.models]  # fmt: skip
        print("$", " ".join(command[1:]), f"\nload average before: {load()}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.perf_counter() - start
        print(f"exit {done.returncode}, {took:.0f} s wall ({took / 60:.1f} min), "
              f"load average after: {load()}")  # fmt: skip
        lines = done.stdout.splitlines()
        tail = [line for line in lines if line.startswith("training") or "checks:" in line]
        print("\n".join(tail[-12:]))
        if done.returncode not in (0, 1):
            print(done.stderr[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
