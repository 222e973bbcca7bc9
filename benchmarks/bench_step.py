"""Milliseconds per training step of the blog network, batch 1, float64, side by side.

    python benchmarks/bench_step.py [--images 1000] [--repeats 5]

- scratch step: ``scratch.zhou_cnn.ZhouCNN.train_scaled`` (the blog's step, numpy; what
  ``ZhouModel.train_step`` runs at batch 1);
- scratch, harness loop: ``scratch.train.train`` over model ``zhou`` (what the training
  check times: the step plus its per-step records);
- Keras ``fit``: ``model.fit(batch_size=1, shuffle=False)`` on the twin, the path users
  take (compiled loss ``categorical_crossentropy``, Keras's ``SGD``);
- Keras epoch function: ``reference.training.train_epoch``, a whole epoch of Keras's own
  training step inside one ``tf.function`` (the training check's default Keras path,
  bit-identical to ``fit``).

Same initial weights (model ``zhou``, seed 0, copied into each twin), the same images in
the same order, one process. Each path runs one untimed warm-up epoch (tracing), then
``--repeats`` timed epochs; the best epoch is reported (the cores are shared: the
minimum is the least disturbed), in wall time and in this process's CPU time. The
targets of issue 16: scratch >= 30x ``fit`` and >= 5x the epoch function. A script, not
a test: timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

LR = 0.005  # the blog's learning rate
TARGETS = {"keras fit": 30.0, "keras epoch function": 5.0}  # x slower than the scratch step


def time_epochs(run_epoch, repeats: int) -> tuple[float, float]:
    """Best ``(wall, cpu)`` seconds of ``repeats`` timed epochs, after one warm-up epoch."""
    run_epoch()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run_epoch()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def bench_scratch_step(images, labels, repeats):
    from scratch.zhou_cnn import ZhouCNN

    net = ZhouCNN(seed=0, dtype="float64")
    x = net.scale_table.take(images)  # image / 255 - 0.5, as the blog scales
    label_list = [int(label) for label in labels]

    def epoch():
        for image, label in zip(x, label_list, strict=True):
            net.train_scaled(image, label, LR)

    return time_epochs(epoch, repeats), net.softmax.weights.copy()


def bench_scratch_loop(images, labels, repeats):
    from scratch.models import build
    from scratch.optim import SGD
    from scratch.train import train

    model = build("zhou", seed=0, dtype="float64")
    x, order = model.preprocess(images), [np.arange(len(images))]

    def epoch():
        train(model, x, labels, SGD(LR), epochs=1, batch_size=1, orders=order)

    return time_epochs(epoch, repeats), model.params()["dense"]["kernel"].copy()


def _twin():
    from reference.twin import twin
    from scratch.models import build

    model = build("zhou", seed=0, dtype="float64")
    return model, twin(model, "float64")


def bench_fit(images, labels, repeats):
    import keras

    model, keras_model = _twin()
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR),
                        loss="categorical_crossentropy")  # fmt: skip
    x = model.preprocess(images)[..., None]  # (N, 28, 28, 1): NHWC, one channel
    onehot = np.eye(10)[labels]

    def epoch():
        keras_model.fit(x, onehot, batch_size=1, epochs=1, shuffle=False, verbose=0)

    return time_epochs(epoch, repeats), _dense_kernel(keras_model, model)


def bench_epoch_function(images, labels, repeats):
    from reference.layout import layout_for
    from reference.probes import loss_function, one_hot
    from reference.tf_backend import epoch_function
    from reference.training import make_optimizer

    model, keras_model = _twin()
    optimizer = make_optimizer("sgd", LR, "float64")
    optimizer.build(keras_model.trainable_variables)
    x = layout_for(model).input_to_keras(model.preprocess(images))
    run = epoch_function(keras_model, optimizer, loss_function(), x, one_hot(labels, 10, x.dtype),
                         batch_size=1)  # fmt: skip
    order = np.arange(len(images))

    def epoch():
        run(order)

    return time_epochs(epoch, repeats), _dense_kernel(keras_model, model)


def _dense_kernel(keras_model, model):
    from reference.layout import layout_for
    from reference.twin import keras_weights

    weights = layout_for(model).weights_from_keras(keras_weights(keras_model), model.params())
    return weights["dense"]["kernel"]


LABELS = {  # the README's row labels (its Speed table is this script's output)
    "scratch step": "scratch step (`ZhouCNN.train_scaled`, numpy)",
    "scratch, harness loop": "scratch, harness loop (`scratch.train.train`, what the check times)",
    "keras fit": "Keras `fit(batch_size=1)`",
    "keras epoch function": "Keras epoch function (a whole epoch of Keras's own step in one "
    "`tf.function`; the training check's default path, bit-identical to `fit`)",
}


def cpu_model() -> str:
    """``lscpu``'s "Model name" (else /proc/cpuinfo's "model name", else the platform's)."""
    import platform
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    if not text:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            return platform.processor() or platform.machine()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``0.52, 2.20, 2.81`` (the cores are shared)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def run_all(images, labels, repeats: int) -> dict:
    """``{name: ((wall s, CPU s) of the best epoch, dense kernel after the last)}`` for the
    four paths, in one process (floatx float64 set before any Keras object)."""
    from reference import backend

    backend.configure("float64")  # floatx before any Keras object (DESIGN.md)
    rows = {}
    for name, bench in (
        ("scratch step", bench_scratch_step),
        ("scratch, harness loop", bench_scratch_loop),
        ("keras fit", bench_fit),
        ("keras epoch function", bench_epoch_function),
    ):
        rows[name] = bench(images, labels, repeats)
    return rows


def load_images(n: int):
    """The first ``n`` training images and labels of the bundled MNIST subset."""
    from parity.data import load_mnist

    data = load_mnist()
    return data.train_images[:n], data.train_labels[:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    images, labels = load_images(args.images)
    before = load_average()
    rows = run_all(images, labels, args.repeats)
    import keras
    import tensorflow as tf

    versions = (tf.__version__, keras.__version__)
    print(report(rows, len(images), args.repeats, versions, (before, load_average())))


def report(rows: dict, n: int, repeats: int, versions, loads) -> str:
    """The markdown table README's Speed section shows: ms per step (wall, CPU), the ratio
    to the scratch step, issue 16's target; the header line names date, CPU, load average."""
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, {os.cpu_count()} CPUs, load average "
        f"{loads[0]} before and {loads[1]} after; {n} images, batch 1, float64, best of "
        f"{repeats} epochs after a warm-up epoch; tensorflow {versions[0]}, keras "
        f"{versions[1]}, numpy {np.__version__}:",
        "",
        "| path | wall ms per step | CPU ms per step | x scratch step (wall / CPU) | issue 16 "
        "target |",
        "|---|---|---|---|---|",
    ]
    (base_wall, base_cpu), base_kernel = rows["scratch step"]
    for name, ((wall, cpu), _) in rows.items():
        ratio = "1" if name == "scratch step" else f"{wall / base_wall:.1f} / {cpu / base_cpu:.1f}"
        target = ""
        if name in TARGETS:
            met = "met" if cpu / base_cpu >= TARGETS[name] else "not met"
            target = f">= {TARGETS[name]:.0f}x (CPU): {met}"
        lines.append(f"| {LABELS[name]} | {wall / n * 1e3:.4f} | {cpu / n * 1e3:.4f} | {ratio} | "
                     f"{target} |")  # fmt: skip
    drifts = ", ".join(
        f"{name} {np.abs(kernel - base_kernel).max() / np.abs(base_kernel).max():.1e}"
        for name, (_, kernel) in rows.items()
        if name != "scratch step"
    )
    fit, epoch = rows["keras fit"][1], rows["keras epoch function"][1]
    lines += [
        "",
        f"Dense kernel after {repeats + 1} epochs, max |difference| / max |kernel| against the "
        f"scratch step's: {drifts}. `fit` and the epoch function: max |difference| "
        f"{np.abs(fit - epoch).max():.1e} (bit-identical: 0).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
