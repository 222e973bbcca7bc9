"""Milliseconds per training step of the blog network, batch 1, float64, three ways.

    /work/venv/bin/python benchmarks/bench_step.py [--images 1000] [--repeats 3]

- scratch: ``scratch.zhou.ZhouCNN.train`` (the blog's own step, numpy);
- keras fit: ``model.fit(batch_size=1, shuffle=False)``, the path users take;
- keras tf.function: a whole epoch of SGD steps inside one ``tf.function`` (Keras's
  fastest path on CPU: no per-step Python).

Same initial weights (the scratch seed network's, copied into Keras), same images in
the same order, measured in the same process. Each path runs one untimed warm-up
epoch (tracing), then ``--repeats`` timed epochs; the best epoch is reported (the
machine is shared, the minimum is the least disturbed). A script, not a test: timings
are never asserted.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from parity.data import load_mnist  # noqa: E402
from scratch.zhou import ZhouCNN  # noqa: E402

LR = 0.005  # the blog's learning rate


def time_epochs(run_epoch, repeats: int) -> list[float]:
    """Seconds per epoch of ``repeats`` timed runs, after one warm-up run."""
    run_epoch()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - start)
    return times


def keras_model(keras, net: ZhouCNN):
    """Conv2D(8, 3, no bias) -> MaxPooling2D(2) -> Flatten -> Dense(10, softmax), blog weights."""
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, use_bias=False),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    kernel = net.conv.filters.transpose(1, 2, 0)[:, :, None, :]  # (8, 3, 3) -> (3, 3, 1, 8)
    model.set_weights([kernel, net.softmax.weights, net.softmax.biases])
    return model


def bench_scratch(images, labels, repeats):
    net = ZhouCNN(seed=0, dtype="float64")
    label_list = [int(label) for label in labels]

    def epoch():
        for image, label in zip(images, label_list, strict=True):
            net.train(image, label, LR)

    return time_epochs(epoch, repeats), net.softmax.weights


def bench_fit(keras, x, onehot, repeats):
    model = keras_model(keras, ZhouCNN(seed=0))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR),
                  loss="categorical_crossentropy")  # fmt: skip

    def epoch():
        model.fit(x, onehot, batch_size=1, epochs=1, shuffle=False, verbose=0)

    return time_epochs(epoch, repeats), model.get_weights()[1]


def bench_tf_function(keras, tf, x, onehot, repeats):
    model = keras_model(keras, ZhouCNN(seed=0))
    optimizer = keras.optimizers.SGD(learning_rate=LR)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy()
    x_t, y_t = tf.constant(x), tf.constant(onehot)

    @tf.function
    def epoch_fn():
        for i in tf.range(tf.shape(x_t)[0]):
            with tf.GradientTape() as tape:
                loss = loss_fn(y_t[i : i + 1], model(x_t[i : i + 1], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)

    return time_epochs(epoch_fn, repeats), model.get_weights()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    data = load_mnist()
    images, labels = data.train_images[: args.images], data.train_labels[: args.images]
    n = len(images)

    import keras  # after numpy work: the import alone takes seconds

    keras.config.set_floatx("float64")  # before any Keras object (DESIGN.md)
    import tensorflow as tf

    x = (images / 255 - 0.5)[..., None]  # (N, 28, 28, 1) float64, as the blog scales
    onehot = np.eye(10)[labels]

    scratch_times, scratch_dense = bench_scratch(images, labels, args.repeats)
    fit_times, fit_dense = bench_fit(keras, x, onehot, args.repeats)
    tf_times, tf_dense = bench_tf_function(keras, tf, x, onehot, args.repeats)
    # Sanity: all three trained the same weights on the same steps (warm-up + repeats
    # epochs), so their dense kernels must agree to float64 rounding drift.
    drift = {
        name: np.abs(dense - scratch_dense).max() / np.abs(scratch_dense).max()
        for name, dense in (("fit", fit_dense), ("tf.function", tf_dense))
    }

    rows = [
        ("scratch numpy (ZhouCNN.train)", min(scratch_times)),
        ("keras fit(batch_size=1)", min(fit_times)),
        ("keras epoch in one tf.function", min(tf_times)),
    ]
    best = rows[0][1]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())  # shared cores: context
    print(f"\n{n} images, batch 1, float64, best of {args.repeats} epochs "
          f"(tf {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, load average {load})")  # fmt: skip
    print(f"{'path':34s} {'ms/step':>9s} {'x scratch':>10s}   all epochs (ms/step)")
    for (name, seconds), times in zip(rows, (scratch_times, fit_times, tf_times), strict=True):
        every = ", ".join(f"{t / n * 1e3:.3f}" for t in times)
        print(f"{name:34s} {seconds / n * 1e3:9.4f} {seconds / best:10.1f}   {every}")
    print(f"dense kernel after {args.repeats + 1} epochs from the same weights, norm-wise "
          "relative difference to "
          f"scratch: fit {drift['fit']:.1e}, tf.function {drift['tf.function']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
