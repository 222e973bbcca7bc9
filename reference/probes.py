"""Probes of the twin: every layer's output, the loss and its gradients, under scratch names.

Inputs are the scratch model's own preprocessed batch (native layout); results come
back converted to the scratch side's native layouts (``reference.layout``) and keyed by
the scratch names, so the harness joins them with scratch rows on ``(layer, quantity)``.
Every scratch key must have a Keras counterpart: a missing one is an error, never a
skip.

The loss is Keras's: ``keras.losses.CategoricalCrossentropy()`` (categorical
cross-entropy on the softmax output, mean over the batch; the compiled loss of ``fit``).
Keras 3's softmax output carries its logits, so the loss is computed from the logits,
unclipped (DESIGN.md).

Written in Keras: the twin's layers are called one by one, tensors come from
``keras.ops.convert_to_tensor`` and go back through ``keras.ops.convert_to_numpy``. The
gradient tape, the one thing Keras 3 has no backend-neutral API for, is
``reference.tf_backend`` (``record``, ``anchored_call``).
"""

from __future__ import annotations

import numpy as np

from reference import layout as layout_module
from reference.layout import NoKerasCounterpart, Tree


def one_hot(labels, units: int, dtype) -> np.ndarray:
    """Integer class labels ``(N,)`` -> one-hot ``(N, units)`` in ``dtype``."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "Invalid value for argument `labels`. Expected integer class indices of shape "
            f"(N,). Received labels.dtype={labels.dtype}, labels.shape={labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= units):
        raise ValueError(
            f"Invalid value for argument `labels`. Expected class indices in [0, {units}). "
            f"Received values in [{labels.min()}, {labels.max()}]."
        )
    return np.eye(units, dtype=dtype)[labels]


def loss_function():
    """Keras's categorical cross-entropy, mean over the batch (``fit``'s compiled loss)."""
    import keras

    return keras.losses.CategoricalCrossentropy()


def run_layers(keras_model, x_keras, anchors: dict | None = None) -> tuple[dict, dict]:
    """Call the twin layer by layer: ``({layer: input tensor}, {layer: output tensor})``.

    ``anchors`` maps a kinked layer's name (:func:`kinked_layers`) to an input array in Keras
    layout: that layer's backward pass is then taken at the anchor (see :func:`gradients`);
    its forward output is still Keras's own.
    """
    from reference.tf_backend import anchored_call

    anchors = anchors or {}
    inputs, outputs = {}, {}
    h = x_keras
    for layer in keras_model.layers:
        inputs[layer.name] = h
        h = anchored_call(layer, h, anchors[layer.name]) if layer.name in anchors else layer(h)
        outputs[layer.name] = h
    return inputs, outputs


def layer_vjp(layer, x, dy) -> np.ndarray:
    """The Keras layer's input gradient at input ``x`` for the upstream gradient ``dy``
    (both numpy, Keras layout): ``dy^T d layer(x) / dx``.

    ``x`` and ``dy`` are taken in the layer's dtype (code under test that returns float64
    from a float32 model gets Keras's float32 answer, and a dtype FAIL, not a crash)."""
    import keras

    from reference import tf_backend

    dtype = np.dtype(layer.compute_dtype)
    x = keras.ops.convert_to_tensor(np.asarray(x).astype(dtype, copy=False))
    y, gradient = tf_backend.record(lambda: layer(x), watch=[x])
    return gradient(y, [x], np.asarray(dy).astype(dtype, copy=False))[0]


def forward(keras_model, model, x) -> dict[str, np.ndarray]:
    """Every scratch layer's output from the twin, ``{layer: array}`` in scratch layout."""
    import keras

    layout = layout_module.layout_for(model)
    x_keras = keras.ops.convert_to_tensor(layout.input_to_keras(x))
    _, outputs = run_layers(keras_model, x_keras)
    arrays = {name: keras.ops.convert_to_numpy(tensor) for name, tensor in outputs.items()}
    result = {}
    for layer in model.layer_names:
        k_layer, k_quantity = layout.keras_key(layer, "output")
        result[layer] = layout.from_keras(layer, "output", _lookup(arrays, k_layer, layer, model))
        assert k_quantity == "output", (layer, k_quantity)
    return result


def gradients(keras_model, model, x, labels, anchor_outputs=None) -> tuple[np.floating, Tree]:
    """Keras's loss and its gradients for every scratch key, in scratch layout.

    Returns ``(loss, tree)``: ``loss`` a numpy scalar in the twin's dtype; ``tree`` is
    ``{layer: {"input": d loss/d layer input, weight: d loss/d weight}}`` for every scratch
    layer and every scratch weight, from one gradient tape (``reference.tf_backend.record``).

    ``anchor_outputs`` (the scratch side's forward outputs, ``{layer: array}`` in scratch
    layout) anchors the kinks: every max pool's routing and every ReLU's mask is decided on
    the scratch side's input of that layer, with Keras's own rule (TensorFlow's first
    maximum in row-major order; ReLU's derivative 0 at 0). In float32 the two forward passes
    differ by rounding, and a window whose maxima tie within a few ulps (70-90% of MNIST's
    2x2 windows tie exactly) is routed by the rounding of each side: decided on one side's
    input, the routing is that of a point within the forward budget of both, so
    everything upstream compares strictly. Routing itself is judged exactly, with
    bit-identical inputs, by the ties check (``parity.checks.ties``).
    """
    import keras

    from reference import tf_backend

    layout = layout_module.layout_for(model)
    x_numpy = layout.input_to_keras(x)
    x_keras = keras.ops.convert_to_tensor(x_numpy)
    units = int(keras_model.output_shape[-1])
    y = keras.ops.convert_to_tensor(one_hot(labels, units, x_numpy.dtype))
    anchors = _anchors(keras_model, layout, model, x, anchor_outputs)

    def run():
        inputs, outputs = run_layers(keras_model, x_keras, anchors)
        return inputs, loss_function()(y, outputs[keras_model.layers[-1].name])

    (inputs, loss), gradient = tf_backend.record(run, watch=[x_keras])
    keys = [(name, "input") for name in inputs]
    sources = list(inputs.values())
    for layer in keras_model.layers:
        for variable in layer.trainable_weights:
            keys.append((layer.name, variable.name))
            sources.append(variable)
    keras_grads: Tree = {}
    for (k_layer, k_quantity), grad in zip(keys, gradient(loss, sources), strict=True):
        if grad is None:
            raise RuntimeError(f"Twin layer `{k_layer}` {k_quantity}: the loss has no gradient.")
        keras_grads.setdefault(k_layer, {})[k_quantity] = grad
    loss = keras.ops.convert_to_numpy(loss)[()]  # a numpy scalar, as Tensor.numpy() gives
    return loss, _scratch_tree(keras_grads, layout, model)


def kinked_layers(keras_model, model, layout=None) -> list[tuple[str, str]]:
    """``(scratch layer, Keras layer)`` of every layer whose backward pass jumps with its
    input (max pooling: which element is the maximum; ReLU: which side of 0), in forward
    order: the kinds the network description calls kinked (``spec.Network.kinked``)."""
    layout = layout or layout_module.layout_for(model)
    return [(layer, layout.keras_key(layer, "input")[0]) for layer in model.spec.kinked()]


def _anchors(keras_model, layout, model, x, anchor_outputs) -> dict:
    """``{Keras kinked layer: its input on the scratch side, Keras layout}``."""
    if anchor_outputs is None:
        return {}
    names = list(model.layer_names)
    anchors = {}
    for layer, k_layer in kinked_layers(keras_model, model, layout):
        i = names.index(layer)
        scratch_input = x if i == 0 else anchor_outputs[names[i - 1]]
        anchors[k_layer] = layout.to_keras(layer, "input", scratch_input)
    return anchors


def _scratch_tree(keras_grads: Tree, layout, model) -> Tree:
    params = model.params()
    tree: Tree = {}
    for layer in model.layer_names:
        for quantity in ("input", *params.get(layer, {})):
            k_layer, k_quantity = layout.keras_key(layer, quantity)
            if k_quantity not in keras_grads.get(k_layer, {}):
                raise NoKerasCounterpart(
                    f"Model `{model.name}`: scratch layer `{layer}` {quantity} maps to Keras "
                    f"`{k_layer}` {k_quantity}, which the twin has no gradient for; twin "
                    f"gradients: {[f'{a}/{b}' for a, bs in keras_grads.items() for b in bs]}."
                )
            array = keras_grads[k_layer][k_quantity]
            tree.setdefault(layer, {})[quantity] = layout.from_keras(layer, quantity, array)
    return tree


def _lookup(arrays: dict, k_layer: str, layer: str, model):
    try:
        return arrays[k_layer]
    except KeyError:
        raise NoKerasCounterpart(
            f"Model `{model.name}`: scratch layer `{layer}` maps to Keras layer `{k_layer}`, "
            f"which the twin lacks; twin layers: {list(arrays)}."
        ) from None


def isolated(keras_model, model, layer: str, x, upstream=None, labels=None, layout=None):
    """One scratch layer judged alone: its Keras counterpart fed the scratch side's own input.

    Parameters
    ----------
    keras_model : the twin.
    model : the scratch ``HarnessModel`` (its layout and weight names).
    layer : str
        A scratch layer name; its Keras counterpart is the run of twin layers from the one
        holding its ``input`` to the one holding its ``output`` (the channels-first
        ``dense`` is Keras's ``flatten`` then ``dense``).
    x : ndarray
        The layer's input on the scratch side, scratch layout ``(N, ...)``.
    upstream : ndarray or None
        d loss / d (layer output) on the scratch side: the next scratch layer's input
        gradient, scratch layout of that layer's input. ``None`` for the last layer, whose
        upstream is Keras's loss on ``labels``.
    labels : ndarray (N,) of int, or None
        The last layer's labels. With neither ``upstream`` nor ``labels`` only the
        forward output is computed (``grads`` is empty).
    layout : reference.layout.Layout or None
        The conversions of both sides (default ``layout_for(model)``); the layout diagnosis
        passes a candidate layout (the twin's weights set through it).

    Returns
    -------
    ``(output, grads)``: Keras's output of the layer in scratch layout, and ``{"input":
    dx, weight: dw}`` (scratch names and layouts), the layer's own VJP at ``x`` for
    ``upstream``. Because both sides see bit-identical inputs, a difference is made by
    this layer, not inherited from upstream rounding (max-pool routing is judged exactly).
    """
    import keras

    from reference import tf_backend

    layout = layout or layout_module.layout_for(model)
    names = list(model.layer_names)
    span = _span(keras_model, layout, layer)
    x_k = keras.ops.convert_to_tensor(layout.to_keras(layer, "input", x))
    weights = {w: layout.keras_key(layer, w) for w in model.params().get(layer, {})}
    variables = {w: keras_model.get_layer(k).weights for w, (k, _) in weights.items()}
    sources = [x_k] + [
        next(v for v in variables[w] if v.name == kw) for w, (_, kw) in weights.items()
    ]

    def run():
        y = x_k
        for keras_layer in span:
            y = keras_layer(y)
        if upstream is None and labels is not None:  # the last layer: Keras's loss
            dtype = np.dtype(keras.backend.standardize_dtype(y.dtype))
            target = keras.ops.convert_to_tensor(one_hot(labels, int(y.shape[-1]), dtype))
            return y, loss_function()(target, y)
        return y, None

    (y, loss), gradient = tf_backend.record(run, watch=[x_k])
    y_numpy = keras.ops.convert_to_numpy(y)
    if upstream is None and labels is None:  # forward only: no upstream gradient given
        return layout.from_keras(layer, "output", y_numpy), {}
    if upstream is None:
        grads = gradient(loss, sources)
    else:
        following = names[names.index(layer) + 1]
        dy = layout.to_keras(following, "input", upstream).astype(y_numpy.dtype)
        grads = gradient(y, sources, dy)
    out = {"input": layout.from_keras(layer, "input", grads[0])}
    for w, grad in zip(weights, grads[1:], strict=True):
        out[w] = layout.from_keras(layer, w, grad)
    return layout.from_keras(layer, "output", y_numpy), out


def _span(keras_model, layout, layer: str) -> list:
    """The twin layers from ``layer``'s input's Keras layer to its output's, in order."""
    first, last = layout.keras_key(layer, "input")[0], layout.keras_key(layer, "output")[0]
    names = [lyr.name for lyr in keras_model.layers]
    for name in (first, last):
        if name not in names:
            raise NoKerasCounterpart(
                f"Scratch layer `{layer}` maps to Keras layer `{name}`, which the twin "
                f"lacks; twin layers: {names}."
            )
    return keras_model.layers[names.index(first) : names.index(last) + 1]
