"""Helpers for the reference tests (parity_tests/test_reference*.py) and their children.

Functions that run in a spawned per-dtype process (``run_in_dtype_process``) must be
importable by name, so they live here rather than in a test module.
"""

from __future__ import annotations

import importlib

import numpy as np

FLOAT32_WEIGHT_SCALE = 0.25  # logits within float32's exp range for every model

MODEL_NAMES = ("zhou", "two-conv", "zhou-seq", "chw", "chw-relu")

# Builders used while a family is not yet in scratch.models' registry.
_FALLBACK_BUILDERS = {
    "chw": "scratch.chw_model:build_chw",
    "chw-relu": "scratch.chw_model:build_chw_relu",
    "zhou": "scratch.zhou_model:build_zhou",
}


class ModelNotAvailable(LookupError):
    """The model's family has not landed in scratch/ yet."""


def build_model(name: str, seed: int = 0, dtype: str = "float64"):
    """``scratch.models.build(name)``, or the family's own builder if not registered yet."""
    from scratch import models

    registered = {**models._BUILDERS, **getattr(models, "_INTERNAL", {})}
    if name in registered:
        return models.build(name, seed=seed, dtype=dtype)
    if name not in _FALLBACK_BUILDERS:
        raise ModelNotAvailable(f"model {name!r} is not registered in scratch.models")
    module, function = _FALLBACK_BUILDERS[name].split(":")
    try:
        builder = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise ModelNotAvailable(
            f"model {name!r}: {module}:{function} not there ({error})"
        ) from None
    model = builder(seed=seed, dtype=dtype)
    model.name = name
    return model


def o1_params(model, seed: int = 1, scale: float = 1.0) -> dict:
    """Standard-normal values (O(1)) times ``scale`` for every weight, in the model's dtype."""
    rng = np.random.default_rng(seed)
    return {
        layer: {
            w: (rng.standard_normal(a.shape) * scale).astype(a.dtype) for w, a in weights.items()
        }
        for layer, weights in model.params().items()
    }


def tie_fraction(pool_input_nhwc: np.ndarray, pool: int = 2) -> float:
    """Share of ``pool`` x ``pool`` windows (stride ``pool``) whose maximum is not unique."""
    n, h, w, c = pool_input_nhwc.shape
    hh, ww = h // pool, w // pool
    windows = pool_input_nhwc[:, : hh * pool, : ww * pool, :].reshape(n, hh, pool, ww, pool, c)
    windows = windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, hh, ww, c, pool * pool)
    count = (windows == windows.max(axis=-1, keepdims=True)).sum(axis=-1)
    return float(np.mean(count > 1))


def pool_input_nhwc(model, x) -> np.ndarray:
    """The input of the scratch model's first max pool for batch ``x``, in Keras layout
    (NHWC)."""
    from reference.layout import layout_for

    names = list(model.layer_names)
    previous = names[names.index(model.spec.pools()[0]) - 1]
    activation = model.forward(x)[previous]
    return layout_for(model).to_keras(previous, "output", activation)


def scratch_train(model, x, labels, orders, batch_size=1, optimizer="sgd", learning_rate=0.005):
    """Scratch training (``scratch.train.train``): ``(per-step losses, per-step n_correct)``."""
    from reference.optimizers import scratch_optimizer
    from scratch.train import train

    opt = scratch_optimizer(optimizer, learning_rate)
    history = train(model, x, labels, opt, epochs=len(orders), batch_size=batch_size, orders=orders)
    losses = np.array([s.loss for s in history.steps])
    return losses, np.array([s.n_correct for s in history.steps])


def probe_pairs(twin_model, model, x, labels) -> dict:
    """Both sides' forward outputs and ``(loss, gradients)`` of batch ``x``, for comparing."""
    from reference import probes

    return {
        "forward": (model.forward(x), probes.forward(twin_model, model, x)),
        "gradients": (
            model.gradients(x, labels),
            probes.gradients(twin_model, model, x, labels, anchor_outputs=model.forward(x)),
        ),
    }


# -- work for a spawned float32 process ------------------------------------------------


def float32_measurements(names, images, labels, n_images: int = 32, steps: int = 200) -> dict:
    """Arrays the float32 tests compare, produced in one float32 process.

    Per available model: dtypes of twin weights, outputs, loss and learning rate;
    ``init``/``o1`` probe pairs (real images; O(1) weights); ``o1_logits64`` (scratch
    float64 logits with the same weights, to show how far float32 is from float64);
    ``train_<path>``: scratch and twin per-step losses and final weights after ``steps``
    SGD steps. Also the messages of errors a float32 process must raise.

    ``images`` (M, 28, 28) uint8 and ``labels`` (M,): real MNIST training images, given by
    the caller (``reference`` never imports ``parity``, which loads the data), M at least
    ``max(n_images, steps)``.
    """
    if len(images) < max(n_images, steps) or len(labels) != len(images):
        raise ValueError(
            f"Invalid value for argument `images`. Expected at least {max(n_images, steps)} "
            f"images with one label each. Received {len(images)} images, {len(labels)} labels."
        )
    data = (np.asarray(images), np.asarray(labels))
    out = {"floatx": _floatx(), "models": {}, "errors": _float32_errors()}
    for name in names:
        try:
            build_model(name, dtype="float32")
        except ModelNotAvailable:
            continue
        out["models"][name] = _float32_model(name, data, n_images, steps)
    return out


def _floatx() -> str:
    import keras

    return keras.config.floatx()


def _float32_model(name, data, n_images, steps) -> dict:
    from reference import probes
    from reference import twin as twin_module

    model = build_model(name, dtype="float32")
    twin_model = twin_module.twin(model, "float32")
    x, labels = model.preprocess(data[0][:n_images]), data[1][:n_images]
    result = {"weight_dtypes": sorted({str(v.dtype) for v in twin_model.weights})}
    result["init"] = probe_pairs(twin_model, model, x, labels)
    # Smaller than the float64 tests' O(1) weights: there the blog's probabilities
    # (its loss is -log p) underflow to 0 in float32 and its loss is -log 0.
    model.set_params(o1_params(model, scale=FLOAT32_WEIGHT_SCALE))
    twin_module.copy_into_keras(twin_model, model)
    result["o1"] = probe_pairs(twin_model, model, x, labels)
    keras_loss = probes.gradients(twin_model, model, x, labels)[0]
    result["dtypes"] = {
        "output": str(result["o1"]["forward"][1]["softmax"].dtype),
        "loss": str(np.asarray(keras_loss).dtype),
    }
    model64 = build_model(name, dtype="float64")
    model64.set_params(
        {k: {w: a.astype(np.float64) for w, a in ws.items()} for k, ws in model.params().items()}
    )
    result["o1_logits64"] = model64.forward(x.astype(np.float64))["dense"]
    for path in ("fit", "tape"):
        result[f"train_{path}"] = _float32_training(name, path, data, steps)
    return result


def _float32_training(name, path, data, steps) -> dict:
    from reference import training
    from reference import twin as twin_module

    order = [np.arange(steps)]
    model = build_model(name, dtype="float32")
    x, labels = model.preprocess(data[0][:steps]), data[1][:steps]
    run = training.train(path, twin_module.twin(model, "float32"), model, x, labels, order)
    losses, _ = scratch_train(model, x, labels, order)
    return {
        "scratch_losses": losses.astype(np.float32),
        "keras_losses": run.losses,
        "scratch_weights": model.snapshot(),
        "keras_weights": run.weights,
        "learning_rate": run.learning_rate,
    }


def _float32_errors() -> dict:
    """Messages of the errors a float32 process must raise for float64 requests."""
    from reference import training
    from reference import twin as twin_module

    messages = {}
    try:
        training.make_optimizer("sgd", 0.005, "float64")
    except RuntimeError as error:
        messages["optimizer"] = str(error)
    try:
        twin_module.twin(build_model("two-conv", dtype="float64"), "float64")
    except ValueError as error:
        messages["twin"] = str(error)
    return messages


def configured_floatx() -> tuple:
    """``(configured dtype, Keras floatx)`` of this process (for the backend tests)."""
    from reference.backend import configured_dtype

    return configured_dtype(), _floatx()


def keras_path_runs(cases: dict, images, labels, epochs: int, chunk_steps: int) -> dict:
    """``{case: {path: TrainingRun}}`` of the twin trained by ``fit`` and by the epoch
    function (``reference.training``) from the same weights on the same schedule, in this
    process's dtype. ``cases``: ``{id: (model, optimizer, learning rate, batch size)}``;
    ``images``/``labels``: the training prefix, visited in a seeded order per epoch."""
    from reference import training
    from reference import twin as twin_module
    from reference.backend import configured_dtype

    dtype, out = configured_dtype(), {}
    orders = [np.random.default_rng([0, epoch]).permutation(len(images)) for epoch in range(epochs)]
    for case, (name, optimizer, learning_rate, batch_size) in cases.items():
        out[case] = {}
        for path in ("fit", "epoch"):
            model = build_model(name, dtype=dtype)
            kwargs = dict(batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate)
            if path == "epoch":
                kwargs["chunk_steps"] = chunk_steps
            x = model.preprocess(images)
            out[case][path] = training.train(
                path, twin_module.twin(model, dtype), model, x, labels, orders, **kwargs
            )
    return out


def masked_dropout_vs_keras(rate: float, seed: int, scale_bug: float = 1.0) -> tuple:
    """In this process's dtype: Keras's own ``Dropout(rate)`` in training mode on a
    positive batch, its mask read back (output != 0), then the twin's ``MaskedDropout``
    given that mask: ``(outputs bit-equal, input gradients bit-equal)``. ``scale_bug``
    multiplies the twin layer's output (a planted bug: 1.0 is the real layer)."""
    import keras

    from reference import modal_layers, tf_backend

    rng = np.random.default_rng(seed)
    x = keras.ops.convert_to_tensor(rng.uniform(0.1, 1.0, (64, 32)).astype(keras.config.floatx()))
    dy = rng.standard_normal((64, 32)).astype(keras.config.floatx())
    theirs = keras.layers.Dropout(rate, seed=seed)
    y, gradient = tf_backend.record(lambda: theirs(x, training=True), watch=[x])
    g = gradient(y, [x], dy)[0]
    y = keras.ops.convert_to_numpy(y)
    ours = modal_layers.classes()[1](rate)
    ours.build((None, 32))
    ours.keep.assign(y != 0)
    ours.harness_training = True
    y2, gradient2 = tf_backend.record(lambda: ours(x) * scale_bug, watch=[x])
    g2 = gradient2(y2, [x], dy)[0]
    return (bool(np.array_equal(y, keras.ops.convert_to_numpy(y2))),
            bool(np.array_equal(g, g2)), str(y.dtype))  # fmt: skip


def process_facts() -> tuple:
    """``(pid, a draw from numpy's global generator, a new Dense layer's automatic name,
    scratch.optim.Adam._denominator's qualified name)`` in this process: what a kept
    process (``reference.backend.KeptProcesses``) must reset between tasks."""
    import os

    import keras

    from scratch.optim import Adam

    # the legacy global generator on purpose: keras.utils.set_random_seed seeds it
    return (os.getpid(), float(np.random.random()), keras.layers.Dense(1).name,  # noqa: NPY002
            Adam._denominator.__qualname__)  # fmt: skip
