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
from scratch.protocol import HarnessModel, Tree
from scratch.user_api import ApiError, source_of
from spec import Network

# Keras kind -> the API's weight attributes, in Keras's (kernel, bias) order.
WEIGHTS = {"Conv2D": ("filters", "bias"), "Dense": ("weights", "bias")}
KERAS_WEIGHTS = ("kernel", "bias")
CALLS = ("forward", "backward")  # keys of modified_inputs(): (layer, call)


class ChannelsFirstModel(HarnessModel):
    """A channels-first implementation behind ``scratch.protocol.HarnessModel``.

    Subclasses set ``spec``, ``name``, ``dtype``, ``per_image`` and ``loss_function``
    (``softmax_loss``) and give :attr:`layers`, ``((Keras layer name, layer), ...)`` in
    forward order, the Softmax (the loss) left out. ``class_names`` maps a layer name to
    the class shown in messages.

    Capabilities: the required ones only (weights are stepped by the harness's optimizers
    from the returned ``(dw, db)``, never by the API); ``ChwModel`` adds ``loss_from``.

    ``forward`` -> every layer's output, batch-first and NCHW (``{"conv2d": (N, 8, 26, 26),
    ..., "dense": scores (N, 10), "softmax": softmax(scores) (N, 10)}`` for ``chw-relu``);
    ``gradients`` -> ``(mean loss, tree)``: ``input`` for every layer (``softmax``'s is
    ``dscores``) and ``kernel``, ``bias`` (the returned ``dw``, ``db``) for every layer with
    weights, in the API's layouts (``(F, C, k, k)``, ``(in, out)``).
    """

    spec: Network
    per_image: bool
    loss_function: object  # softmax_loss(scores, y) -> (mean loss, dscores)
    class_names: dict = {}

    @property
    @abc.abstractmethod
    def layers(self) -> tuple:
        """``((name, layer), ...)``, read at every call (the self-test swaps a layer)."""

    def _adapter_state(self) -> None:
        """Call once in ``__init__``, after ``spec`` is set."""
        self._softmax = self.spec.layers[-1].name
        self._input = self.spec.native_shape(self.spec.native_names[0], "input")[1:]
        self._in_place: dict[tuple[str, str], str] = {}
        self._not_provided: dict[tuple[str, str], str] = {}

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
        """``{layer: {"kernel", "bias"}}`` for every layer with weights (the live arrays)."""
        layers = dict(self.layers)
        return {
            name: {
                keras: getattr(layers[name], attribute)
                for keras, attribute in zip(
                    KERAS_WEIGHTS, WEIGHTS[self.spec.layer(name).kind], strict=True
                )  # fmt: skip
            }
            for name in self.spec.weight_shapes()
        }

    # -- forward ------------------------------------------------------------------------

    def forward(self, x) -> dict[str, np.ndarray]:
        self._check_x(x)
        outputs = self._join([self._forward_piece(piece) for _, piece in self._pieces(x)])
        names = [name for name, _ in self.layers]
        result = dict(zip(names, outputs, strict=True))
        result[self._softmax] = softmax(outputs[-1])  # the probabilities softmax_loss means
        return result

    def _pieces(self, x) -> list:
        """``(index, piece)``: each image ``(C, H, W)`` alone, or the whole batch once."""
        if self.per_image:
            return [(i, x[i]) for i in range(len(x))]
        return [(slice(None), x)]

    def _join(self, per_piece: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Per piece, a list of arrays -> per position, the batch (images stacked)."""
        if not self.per_image:
            return per_piece[0]
        return [np.stack(arrays) for arrays in zip(*per_piece, strict=True)]

    def _forward_piece(self, piece) -> list[np.ndarray]:
        """Every layer's output for one piece (copies, taken before the next layer runs)."""
        h = np.array(piece, copy=True)  # the first layer never gets the harness's array
        seen, outputs = np.array(piece, copy=True), []
        for name, layer in self.layers:
            out = layer.forward(h)
            self._watch(name, "forward", h, seen, "x")
            self._check_output(name, out)
            seen = np.array(out, copy=True)
            outputs.append(seen)
            h = out  # the layer's own array, as the user's own chain would pass it
        return outputs

    # -- gradients ----------------------------------------------------------------------

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        self._check_x(x)
        pieces = self._pieces(x)
        scores = self._join([[self._forward_piece(piece)[-1]] for _, piece in pieces])[0]
        loss, dscores = self._loss(scores, labels)
        tree: Tree = {self._softmax: {"input": dscores}}
        tree.update(self._backward(pieces, dscores, rerun=len(pieces) > 1))
        return loss, {name: tree[name] for name in self.layer_names}

    def backward_from(self, x, dout) -> Tree:
        """The layers' backward pass from ``dout``, d loss / d (last layer's output) in
        its native layout ``(N, ...)``, instead of the loss's ``dscores``: ``{layer:
        {"input": dx, "kernel": dw, "bias": db}}`` for every layer but the Softmax, ``x``
        run forward first (``parity.checks.sweep`` judges one layer alone this way)."""
        self._check_x(x)
        return self._backward(self._pieces(x), np.asarray(dout), rerun=True)

    def _backward(self, pieces: list, d, rerun: bool) -> Tree:
        """Per piece, (``rerun``: forward again, then) backward from its rows of ``d``;
        gathered per layer."""
        per_piece = []
        for index, piece in pieces:
            if rerun:
                self._forward_piece(piece)  # the layers' caches hold this image again
            per_piece.append(self._backward_piece(d[index]))
        return {name: self._gather(name, [grads[name] for grads in per_piece])
                for name, _ in self.layers}  # fmt: skip

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

    def _backward_piece(self, dscores) -> dict[str, dict]:
        """``{layer: {"input": dx, "kernel": dw, "bias": db}}`` for one piece (copies)."""
        d, seen = np.array(dscores, copy=True), np.array(dscores, copy=True)
        grads = {}
        first = self.layers[0][0]
        for name, layer in reversed(self.layers):
            result = layer.backward(d)
            self._watch(name, "backward", d, seen, "dout")
            dx, weights = self._split(name, layer, result)
            if dx is None and name != first:
                raise ApiError(
                    f"{type(layer).__name__}.backward returned dx=None; the API returns the "
                    "gradient of the input (only the first layer may not).",
                    source_of(layer, "backward"),
                )
            seen = None if dx is None else np.array(dx, copy=True)
            grads[name] = {"input": seen, **weights}
            d = dx
        return grads

    def _split(self, name: str, layer, result) -> tuple:
        """``backward``'s result -> ``(dx, {"kernel": dw, "bias": db})`` (copies)."""
        cls = type(layer).__name__
        if self.spec.layer(name).kind not in WEIGHTS:
            if isinstance(result, (tuple, list)):
                raise ApiError(
                    f"{cls}.backward returned a {type(result).__name__} of {len(result)}; "
                    "the API returns dx alone for a layer without weights.",
                    source_of(layer, "backward"),
                )
            return result, {}
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            raise ApiError(
                f"{cls}.backward returned {_describe(result)}; the API returns (dx, dw, db) "
                "for a layer with weights.",
                source_of(layer, "backward"),
            )
        dx, dw, db = result
        return dx, {"kernel": np.array(dw, copy=True), "bias": np.array(db, copy=True)}

    def _gather(self, name: str, per_piece: list[dict]) -> dict:
        """One layer's gradients over the pieces: input gradients stacked, weight
        gradients summed (each piece's ``dscores`` already carries the 1/N)."""
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
            out["input"] = self._join([[a] for a in inputs])[0]
        for weight in (w for w in KERAS_WEIGHTS if w in per_piece[0]):
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

    def _check_output(self, name: str, out) -> None:
        """Raise :class:`OutputShapeError` if ``out``, one piece's output of layer
        ``name``, is not shaped as the description says (per example, native layout)."""
        expected = self.spec.native_shape(name, "output")[1:]
        actual = np.shape(out) if self.per_image else np.shape(out)[1:]
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
