"""The channels-first (cs231n-style) API, called in one place: models ``chw``, ``chw-relu``,
``chw-odd`` and a user's own file (``parity check --api cs231n``) alike.

The API is the second seed document's: each layer's ``forward(x)`` keeps what its backward
needs and returns its output; ``backward(dout)`` returns ``dx`` (ReLU, MaxPool2x2) or
``(dx, dw, db)`` (Conv: ``filters`` (F, C, k, k), ``bias`` (F,); Linear: ``weights``
(in, out), ``bias`` (out,)); ``softmax_loss(scores (N, K), y (N,))`` returns the mean loss
and ``dscores``, already divided by N. Weights are updated by the caller (the harness's
optimizers step the returned ``(dw, db)``), never by ``backward``.

:class:`ChannelsFirstModel` is the adapter every such implementation sits behind. It calls
the layers in the order of the network description, one image ``(C, H, W)`` at a time when
the implementation takes one image (``per_image=True``: a user's file, as the API says) or
the whole batch ``(N, C, H, W)`` at once (the shipped ``scratch.chw`` classes document
batches). ``softmax_loss`` always gets the whole batch, so a ``dscores`` not divided by N
shows. Per image, a weight's gradient is the sum of the images' (each ``dscores`` row
already carries the 1/N), and each image is run forward again before its backward pass,
since a layer caches only its last forward.

Every array a layer or the loss receives is snapshotted before the call and compared with
it after: a call that writes into its argument (a ReLU doing ``x[x < 0] = 0`` on the
caller's array) is recorded (:meth:`ChannelsFirstModel.modified_inputs`) and the gradients
check reports it as a FAIL naming the layer. The comparison is bit-exact on purpose: it
compares one array with its own copy, no arithmetic in between, so any difference is a
write. What the harness stores (outputs, gradients) are copies taken before the next call,
so a layer that writes into its input is not blamed on the layer that produced it.
"""

from __future__ import annotations

import abc

import numpy as np

from scratch.chw import softmax
from scratch.cs231n_modes import Modes
from scratch.protocol import REQUIRED, Capability, HarnessModel, Tree
from scratch.user_api import ApiError, source_of
from spec import Network
from spec.layers import MODAL_KINDS

# Keras kind -> the API's weight attributes, in the order of Keras's names (KERAS_WEIGHTS)
# and of backward's (dx, dw, db) / (dx, dgamma, dbeta). A description without a bias
# (use_bias=False) leaves the bias out of the compared weights.
WEIGHTS = {"Conv2D": ("filters", "bias"), "Dense": ("weights", "bias"),
           "BatchNormalization": ("gamma", "beta")}  # fmt: skip
KERAS_WEIGHTS = {"Conv2D": ("kernel", "bias"), "Dense": ("kernel", "bias"),
                 "BatchNormalization": ("gamma", "beta")}  # fmt: skip
CALLS = ("forward", "backward")  # keys of modified_inputs(): (layer, call)


class ChannelsFirstModel(HarnessModel):
    """A channels-first implementation behind ``scratch.protocol.HarnessModel``.

    Subclasses set ``spec``, ``name``, ``dtype``, ``per_image`` and ``loss_function``
    (``softmax_loss``) and give :attr:`layers`, ``((Keras layer name, layer), ...)`` in
    forward order, the Softmax (the loss) left out. ``class_names`` maps a layer name to
    the class shown in messages.

    The layers run one after the other over the batch: a layer that takes one image
    (``per_image``) is called on each image in turn (and, before each image's backward
    pass, forward again on that image, since it caches only its last call); a batch norm
    or dropout (cs231n's take batches) and every layer of a batch implementation get the
    whole batch once. So a batch norm always sees the batch's statistics, never pieces.

    Capabilities: the required ones (weights are stepped by the harness's optimizers from
    the returned gradients, never by the API) and training/inference modes
    (:mod:`scratch.cs231n_modes`: ``forward(x, mode)`` of batch norm and dropout, the
    harness's dropout masks, the running statistics as state) and the loss from any
    layer's input (``loss_from``, finite differences).

    ``forward`` -> every layer's output, batch-first and NCHW (``{"conv2d": (N, 8, 26, 26),
    ..., "dense": scores (N, 10), "softmax": softmax(scores) (N, 10)}`` for ``chw-relu``);
    ``gradients`` -> ``(mean loss, tree)``: ``input`` for every layer (``softmax``'s is
    ``dscores``) and every weight the description has (``kernel``/``bias`` from ``(dx, dw,
    db)``, ``gamma``/``beta`` from ``(dx, dgamma, dbeta)``), in the API's layouts (``(F, C,
    k, k)``, ``(in, out)``, ``(C,)``).
    """

    spec: Network
    per_image: bool
    loss_function: object  # softmax_loss(scores, y) -> (mean loss, dscores)
    class_names: dict = {}
    capabilities = REQUIRED | {Capability.MODES, Capability.LOSS_FROM}

    @property
    @abc.abstractmethod
    def layers(self) -> tuple:
        """``((name, layer), ...)``, read at every call (the self-test swaps a layer)."""

    def _adapter_state(self, draws=None) -> None:
        """Call once in ``__init__``, after ``spec`` is set; ``draws``: the dropout layers
        draw their own masks (``scratch.cs231n_modes.Modes``)."""
        self._softmax = self.spec.layers[-1].name
        self._input = self.spec.native_shape(self.spec.native_names[0], "input")[1:]
        self._in_place: dict[tuple[str, str], str] = {}
        self._not_provided: dict[tuple[str, str], str] = {}
        self._modes = Modes(self.spec, draws)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.layers) + (self._softmax,)

    def not_provided(self) -> dict[tuple[str, str], str]:
        return dict(self._not_provided)

    def modified_inputs(self) -> dict[tuple[str, str], str]:
        return dict(self._in_place)

    def preprocess(self, images) -> np.ndarray:
        """``(N, H, W)`` uint8 -> the description's scaling as ``(N, 1, H, W)`` in ``dtype``."""
        images = np.asarray(images)
        channels, height, width = self._input
        if images.ndim != 3 or images.shape[1:] != (height, width) or channels != 1:
            raise ValueError(
                f"Invalid value for argument `images`. Expected shape (N, {height}, {width}). "
                f"Received images.shape={images.shape}."
            )
        # In the target dtype: one correctly rounded division, no double rounding.
        scaling = self.spec.preprocess
        scaled = images.astype(self.dtype) / self.dtype.type(scaling.divisor)
        if scaling.offset:
            scaled += self.dtype.type(scaling.offset)
        return scaled[:, None]

    def params(self) -> Tree:
        """``{layer: {"kernel", "bias"}}`` (``{"gamma", "beta"}`` of a batch norm) for every
        layer with weights, the live arrays; a weight the description leaves out (a bias
        before a batch norm) is not among them."""
        layers = dict(self.layers)
        return {name: {keras: getattr(layers[name], attribute)
                       for keras, attribute in self._weights(name)}
                for name in self.spec.weight_shapes()}  # fmt: skip

    def _weights(self, name: str) -> tuple[tuple[str, str], ...]:
        """``((Keras name, API attribute), ...)`` of the weights the description gives
        layer ``name``."""
        kind, present = self.spec.layer(name).kind, self.spec.weight_shapes().get(name, {})
        pairs = zip(KERAS_WEIGHTS.get(kind, ()), WEIGHTS.get(kind, ()), strict=True)
        return tuple((keras, attribute) for keras, attribute in pairs if keras in present)

    # -- modes and state (scratch.cs231n_modes) --------------------------------------------

    def state(self) -> Tree:
        """``{batch norm: {"moving_mean": running_mean, "moving_variance": running_var}}``,
        the live arrays (read again at every call: cs231n's update rebinds them)."""
        return self._modes.state(dict(self.layers))

    def set_training(self, training: bool) -> None:
        self._modes.set_training(training)

    def set_masks(self, masks: dict[str, np.ndarray]) -> None:
        self._modes.set_masks(masks, dict(self.layers))

    def drawn_masks(self) -> dict[str, np.ndarray] | None:
        return self._modes.drawn_masks()

    # -- forward ------------------------------------------------------------------------

    def forward(self, x) -> dict[str, np.ndarray]:
        self._check_x(x)
        outputs = self._run_forward(x)
        names = [name for name, _ in self.layers]
        result = dict(zip(names, outputs, strict=True))
        result[self._softmax] = softmax(outputs[-1])  # the probabilities softmax_loss means
        return result

    def _batched(self, name: str) -> bool:
        """Whether layer ``name`` is called once on the batch (else once per image)."""
        return not self.per_image or self.spec.layer(name).kind in MODAL_KINDS

    def _run_forward(self, x, start: int = 0) -> list[np.ndarray]:
        """Every layer's output from ``self.layers[start]`` on (copies, taken before the
        next layer runs), ``x`` that layer's input batch. Each layer's input is kept (as
        :attr:`_inputs`) for the per-image layers' second forward before backward."""
        h, seen = np.array(x, copy=True), np.array(x, copy=True)  # never the harness's array
        self._inputs, outputs = [], []
        for name, layer in self.layers[start:]:
            self._inputs.append(seen)
            if self._batched(name):
                out = self._modes.call_forward(name, layer, h)
                self._watch(name, "forward", h, seen, "x")
                self._check_output(name, np.shape(out)[1:])
                seen = np.array(out, copy=True)
            else:
                seen = np.stack([self._forward_image(name, layer, image) for image in seen])
            outputs.append(seen)
            h = out if self._batched(name) else np.array(seen, copy=True)
        return outputs

    def _forward_image(self, name: str, layer, image) -> np.ndarray:
        """One image's output of a per-image layer (a copy)."""
        given = np.array(image, copy=True)
        out = layer.forward(given)
        self._watch(name, "forward", given, image, "x")
        self._check_output(name, np.shape(out))
        return np.array(out, copy=True)

    def loss_from(self, layer_name: str, h, labels) -> float:
        """Mean loss when ``h`` is fed as the input of ``layer_name`` (finite differences):
        the layers from there on, then the loss, through the same calls as ``forward``."""
        if layer_name not in self.layer_names:
            raise ValueError(
                f"Invalid value for argument `layer_name`. Expected one of {self.layer_names}. "
                f"Received layer_name={layer_name!r}."
            )
        start = self.layer_names.index(layer_name)
        scores = h if start == len(self.layers) else self._run_forward(h, start)[-1]
        return self._loss(scores, labels)[0]

    # -- gradients ----------------------------------------------------------------------

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        return self.gradients_and_probabilities(x, labels)[:2]

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(loss, grads, probabilities)`` from ONE forward pass: a training-mode pass
        moves the running statistics, so a step takes exactly one, as Keras's does."""
        self._check_x(x)
        scores = self._run_forward(x)[-1]
        loss, dscores = self._loss(scores, labels)
        tree: Tree = {self._softmax: {"input": dscores}}
        tree.update(self._backward(dscores))
        return loss, {name: tree[name] for name in self.layer_names}, softmax(scores)

    def backward_from(self, x, dout) -> Tree:
        """The layers' backward pass from ``dout``, d loss / d (last layer's output) in
        its native layout ``(N, ...)``, instead of the loss's ``dscores``: ``{layer:
        {"input": dx, "kernel": dw, "bias": db}}`` for every layer but the Softmax, ``x``
        run forward first (``parity.checks.sweep`` judges one layer alone this way)."""
        self._check_x(x)
        self._run_forward(x)
        return self._backward(np.asarray(dout))

    def loss(self, scores, labels) -> tuple:
        """``softmax_loss(scores (N, K), labels (N,))`` through the adapter's checks (its
        result's form, a write into ``scores``): ``(mean loss, dscores (N, K))``."""
        return self._loss(scores, labels)

    def _loss(self, scores, labels) -> tuple:
        given, seen = np.array(scores, copy=True), np.array(scores, copy=True)
        result = self.loss_function(given, labels)
        self._watch(self._softmax, "forward", given, seen, "scores", who="softmax_loss")
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ApiError(
                f"softmax_loss returned {_describe(result)}; the API returns (mean loss, dscores).",
                source_of(self.loss_function),
            )
        loss, dscores = np.asarray(result[0]), np.array(result[1], copy=True)
        if loss.shape != () or loss.dtype.kind != "f":
            raise ApiError(
                f"softmax_loss returned the loss {_describe(result[0])}; the API returns "
                "the mean loss, a float.",
                source_of(self.loss_function),
            )
        if dscores.shape != np.shape(scores):
            raise ApiError(
                f"softmax_loss returned dscores of shape {dscores.shape} for scores of shape "
                f"{np.shape(scores)}; the API returns dscores shaped like the scores.",
                source_of(self.loss_function),
            )
        # A numpy scalar keeps the dtype it came in; a Python float is cast (exact for
        # float64; float32 rounds the mean once, as Keras's float32 loss is).
        value = result[0][()] if isinstance(result[0], (np.ndarray, np.generic)) else None
        return (self.dtype.type(loss) if value is None else value), dscores

    def _backward(self, d) -> Tree:
        """``{layer: {"input": dx, weight: gradient}}`` from ``d`` (d loss / d last
        layer's output), layer by layer after :meth:`_run_forward` (copies)."""
        grads, d = {}, np.array(d, copy=True)
        first = self.layers[0][0]
        for (name, layer), given in zip(reversed(self.layers), reversed(self._inputs),
                                        strict=True):  # fmt: skip
            if self._batched(name):
                per_piece = [self._backward_piece(name, layer, d)]
            else:  # each image: forward again (the layer caches its last call), backward
                per_piece = []
                for image, d_image in zip(given, d, strict=True):
                    layer.forward(np.array(image, copy=True))
                    per_piece.append(self._backward_piece(name, layer, d_image))
            grads[name] = self._gather(name, per_piece, stacked=not self._batched(name))
            if "input" not in grads[name] and name != first:
                raise ApiError(
                    f"{self._class(name)}.backward returned dx=None; the API returns the "
                    "gradient of the input (only the first layer may not).",
                    source_of(layer, "backward"),
                )
            d = grads[name].get("input")
        return {name: grads[name] for name, _ in self.layers}

    def _backward_piece(self, name: str, layer, dout) -> dict:
        """``{"input": dx or None, weight: gradient}`` of one backward call (copies)."""
        given, seen = np.array(dout, copy=True), np.array(dout, copy=True)
        result = layer.backward(given)
        self._watch(name, "backward", given, seen, "dout")
        dx, weights = self._split(name, layer, result)
        return {"input": None if dx is None else np.array(dx, copy=True), **weights}

    def _split(self, name: str, layer, result) -> tuple:
        """``backward``'s result -> ``(dx, {"kernel": dw, "bias": db})`` (``{"gamma":
        dgamma, "beta": dbeta}`` of a batch norm; copies). A gradient the description has
        no weight for (a bias before a batch norm) is dropped."""
        cls = type(layer).__name__
        kind = self.spec.layer(name).kind
        if kind not in WEIGHTS:
            if isinstance(result, (tuple, list)):
                raise ApiError(
                    f"{cls}.backward returned a {type(result).__name__} of {len(result)}; "
                    "the API returns dx alone for a layer without weights.",
                    source_of(layer, "backward"),
                )
            return result, {}
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            form = "(dx, dgamma, dbeta) for a batch norm" if kind in MODAL_KINDS else (
                "(dx, dw, db) for a layer with weights")  # fmt: skip
            raise ApiError(f"{cls}.backward returned {_describe(result)}; the API returns {form}.",
                           source_of(layer, "backward"))  # fmt: skip
        kept = dict(self._weights(name))
        named = zip(KERAS_WEIGHTS[kind], result[1:], strict=True)
        return result[0], {k: np.array(g, copy=True) for k, g in named if k in kept}

    def _gather(self, name: str, per_piece: list[dict], stacked: bool) -> dict:
        """One layer's gradients over the pieces (images, or the batch once): input
        gradients stacked, weight gradients summed (each image's ``dscores`` already
        carries the 1/N)."""
        inputs = [grads["input"] for grads in per_piece]
        out = {}
        if any(a is None for a in inputs):
            if not all(a is None for a in inputs):
                raise ApiError(f"`{name}` ({self._class(name)}): backward returned dx=None for "
                               "some images only.",
                               source_of(dict(self.layers)[name], "backward"))  # fmt: skip
            self._not_provided[(name, "input")] = (
                f"{self._class(name)}.backward returned dx=None (a first layer need not "
                "compute the gradient of the image)."
            )
        else:
            self._not_provided.pop((name, "input"), None)
            out["input"] = np.stack(inputs) if stacked else inputs[0]
        for weight in (w for w in per_piece[0] if w != "input"):
            total = per_piece[0][weight]
            for grads in per_piece[1:]:
                total += grads[weight]  # total is a copy (_split): the user's arrays stay
            out[weight] = total
        return out

    # -- checks -------------------------------------------------------------------------

    def _watch(self, name: str, call: str, given, seen, argument: str, who=None) -> None:
        """Record ``(name, call)`` if ``given`` differs from ``seen``, its copy before the
        call (bit-exact: no arithmetic in between)."""
        if (name, call) in self._in_place:
            return
        given = np.asarray(given)
        if seen is None or (
            given.shape == seen.shape and np.array_equal(given, seen, equal_nan=True)
        ):
            return  # fmt: skip
        changed = (
            f"{np.count_nonzero(given != seen)} of {seen.size} elements"
            if given.shape == seen.shape
            else f"its shape {seen.shape} -> {given.shape}"
        )
        method = who or f"{self._class(name)}.{call}"
        self._in_place[(name, call)] = (
            f"layer `{name}` ({who or self._class(name)}) modified its input in place: "
            f"{method}({argument}) changed {changed} of the caller's `{argument}`. Keras "
            "layers never write into their inputs; work on a copy (np.maximum(x, 0), "
            "x.copy()). The other rows compare copies taken before the call."
        )

    def _check_output(self, name: str, actual: tuple) -> None:
        """Raise :class:`OutputShapeError` if ``actual``, the per-example shape of layer
        ``name``'s output, is not the one the description says (native layout)."""
        expected = self.spec.native_shape(name, "output")[1:]
        if actual != expected:
            raise OutputShapeError(name, actual, expected, (
                f"layer `{name}` ({self._class(name)}).forward returned an output of shape "
                f"{actual} per image; network `{self.spec.name}` says {expected} (the next "
                "layer cannot take it, so nothing after it was run)."))  # fmt: skip

    def _class(self, name: str) -> str:
        return self.class_names.get(name) or type(dict(self.layers)[name]).__name__

    def _check_x(self, x) -> None:
        shape = np.shape(x)
        if len(shape) != 4 or shape[1:] != self._input:
            expected = ", ".join(["N", *map(str, self._input)])
            raise ValueError(
                f"Invalid value for argument `x`. Expected shape ({expected}) "
                f"(channels-first batch). Received x.shape={shape}."
            )


class OutputShapeError(ValueError):
    """A layer's forward returned a shape its network description contradicts: a FAIL at
    ``(layer, "output")`` (``shape_mismatch``: the keyword arguments of
    ``parity.compare.shape_mismatch``), not an exception of the code under test."""

    def __init__(self, layer: str, actual: tuple, expected: tuple, message: str):
        super().__init__(message)
        self.shape_mismatch = dict(layer=layer, quantity="output", actual=actual,
                                   expected=expected, message=message)  # fmt: skip


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return repr(value) if value is None else f"a {type(value).__name__}"
