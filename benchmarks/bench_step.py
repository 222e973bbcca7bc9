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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from parity.data import load_mnist
    from reference import backend

    data = load_mnist()
    images, labels = data.train_images[: args.images], data.train_labels[: args.images]
    n = len(images)
    backend.configure("float64")  # floatx before any Keras object (DESIGN.md)
    import keras
    import tensorflow as tf

    rows = {}
    for name, bench in (
        ("scratch step", bench_scratch_step),
        ("scratch, harness loop", bench_scratch_loop),
        ("keras fit", bench_fit),
        ("keras epoch function", bench_epoch_function),
    ):
        rows[name] = bench(images, labels, args.repeats)
    report(rows, n, args.repeats, versions=(tf.__version__, keras.__version__))


def report(rows: dict, n: int, repeats: int, versions) -> None:
    """Print the table: ms per step (wall, CPU), ratio to the scratch step, target."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())  # shared cores: context
    print(f"\n{n} images, batch 1, float64, best of {repeats} epochs (tensorflow {versions[0]}, "
          f"keras {versions[1]}, numpy {np.__version__}, {os.cpu_count()} CPUs, load average "
          f"{load})")  # fmt: skip
    (base_wall, base_cpu), base_kernel = rows["scratch step"]
    print(f"{'path':24s} {'wall ms':>9s} {'CPU ms':>9s} {'x scratch':>10s} {'target':>7s}"
          "   dense kernel vs scratch step")  # fmt: skip
    for name, ((wall, cpu), kernel) in rows.items():
        ratio = wall / base_wall
        target = f">={TARGETS[name]:.0f}x" if name in TARGETS else ""
        drift = np.abs(kernel - base_kernel).max() / np.abs(base_kernel).max()
        print(f"{name:24s} {wall / n * 1e3:9.4f} {cpu / n * 1e3:9.4f} {ratio:9.1f}x {target:>7s}"
              f"   {drift:.1e}")  # fmt: skip
    fit, epoch = rows["keras fit"][1], rows["keras epoch function"][1]
    print(
        f"fit and the epoch function after {repeats + 1} epochs: max |difference| "
        f"{np.abs(fit - epoch).max():.1e} (bit-identical: 0)"
    )


if __name__ == "__main__":
    main()
