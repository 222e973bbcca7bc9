"""A user's own blog-style classes as the harness sees them (``parity check --api blog``).

The network is the blog's: ``Conv3x3(8)`` -> ``MaxPool2()`` -> ``Softmax(13 * 13 * 8, 10)``,
one image at a time, inputs ``image / 255 - 0.5``, loss ``-ln p[label]`` with the initial
gradient ``-1 / p[label]`` at the label. Layer names, layouts and the Keras twin are those
of model ``zhou`` (its network description ``spec.networks.ZHOU``); the report names the
user's classes beside them (:data:`USER_CLASSES`).

Gradients come from the user's OWN ``backprop(d_L_d_out, learn_rate)``, read exactly by the
same code that reads model ``zhou``'s (:func:`scratch.blog_api.read_backprop`: the input
gradient from a call on the real weights, the weight gradient from a call on zeroed weights
with ``learn_rate = -1``; the weights restored bit for bit). A ``backprop`` that returns
None (the blog's first layer) makes that layer's ``input`` gradient NOT_PROVIDED
(:meth:`UserBlogModel.not_provided`), and so is the gradient of the logits (``softmax``
``input``): the blog's ``Softmax`` is dense and softmax in one class, its backprop returns
the gradient of its input only.

Nothing is cast: arrays are reported in the dtype the user's code returned (the blog's
``np.zeros`` buffers are float64 even for float32 inputs: a dtype FAIL, which is honest).
"""

from __future__ import annotations

import numpy as np

from scratch import blog_api
from scratch.blog_api import FLAT, LAYER_NAMES, NUM_CLASSES, NUM_FILTERS, WEIGHTS
from scratch.protocol import REQUIRED, Capability, HarnessModel, Tree, check_dtype
from scratch.user_api import (
    ApiError,
    check_array,
    check_signature,
    construct,
    describe_attributes,
    source_of,
)
from scratch.user_code import UserCode, load
from scratch.zhou_model import check_images
from spec.networks import ZHOU

POOLED = (13, 13, NUM_FILTERS)
USER_CLASSES = {
    "conv2d": "Conv3x3", "max_pooling2d": "MaxPool2", "flatten": "Softmax",
    "dense": "Softmax", "softmax": "Softmax",
}  # fmt: skip
# The blog's classes as the harness builds and calls them (issue 13, the blog API).
CONSTRUCTORS = {"Conv3x3": (NUM_FILTERS,), "MaxPool2": (), "Softmax": (FLAT, NUM_CLASSES)}
API = {
    "Conv3x3": "the blog API: Conv3x3(num_filters) holds `filters` (num_filters, 3, 3); "
    "forward(image), backprop(d_L_d_out, learn_rate)",
    "MaxPool2": "the blog API: MaxPool2() has forward(input) and backprop(d_L_d_out), "
    "no learning rate",
    "Softmax": "the blog API: Softmax(input_len, nodes) holds `weights` (input_len, nodes) "
    "and `biases` (nodes,); forward(input), backprop(d_L_d_out, learn_rate)",
}
METHODS = {
    "Conv3x3": {"forward": ("image",), "backprop": ("d_L_d_out", "learn_rate")},
    "MaxPool2": {"forward": ("input",), "backprop": ("d_L_d_out",)},
    "Softmax": {"forward": ("input",), "backprop": ("d_L_d_out", "learn_rate")},
}
LOGITS_GRADIENT = (
    "the blog's Softmax is dense and softmax in one class: its backprop returns no gradient "
    "of the logits (that gradient equals the biases' gradient, compared as dense/bias)."
)


class UserBlogModel(HarnessModel):
    """The user's ``Conv3x3``, ``MaxPool2`` and ``Softmax`` behind ``HarnessModel``.

    Initial weights are the blog's distribution drawn from ``seed`` exactly as model
    ``zhou`` draws them (filters N(0, 1)/9, weights N(0, 1)/1352, biases 0), in ``dtype``,
    so runs repeat and start where ``parity run`` does; the user's own unseeded draws are
    replaced.
    """

    spec = ZHOU  # the blog's network: its layouts and its twin
    # Training steps through the user's own backprop; no loss from an inner layer (the
    # user's Softmax flattens and multiplies in one call).
    capabilities = REQUIRED | {Capability.TRAIN_STEP}

    def __init__(self, classes: dict[str, type], seed: int = 0, dtype="float64", name="user"):
        self.name = name
        self.dtype = check_dtype(dtype)
        self.conv, self.pool, self.softmax = (
            construct(classes[cls], CONSTRUCTORS[cls], {}, API[cls]) for cls in CONSTRUCTORS
        )
        self._check_api()
        rng = np.random.default_rng(seed)  # zhou's order: filters, then softmax weights
        self.conv.filters = (rng.standard_normal((NUM_FILTERS, 3, 3)) / 9).astype(self.dtype)
        self.softmax.weights = (rng.standard_normal((FLAT, NUM_CLASSES)) / FLAT).astype(self.dtype)
        self.softmax.biases = np.zeros(NUM_CLASSES, dtype=self.dtype)
        self._not_provided: dict[tuple[str, str], str] = {("softmax", "input"): LOGITS_GRADIENT}

    def _check_api(self) -> None:
        """The constructed objects against the blog API, before any method runs: every
        weight array's name and shape, every method's name and signature; raises
        :class:`scratch.user_code.UserCodeError` (exit 2) naming the class's file, the
        class, the attribute or method, the rule and what was found."""
        objects = {"Conv3x3": self.conv, "MaxPool2": self.pool, "Softmax": self.softmax}
        owners = {"filters": "Conv3x3", "weights": "Softmax", "biases": "Softmax"}
        for _, attribute, shape in WEIGHTS:
            cls = owners[attribute]
            call = f"{cls}({', '.join(map(str, CONSTRUCTORS[cls]))})"
            check_array(objects[cls], attribute, shape, call, API[cls])
        for cls, methods in METHODS.items():
            for method, arguments in methods.items():
                check_signature(objects[cls], method, arguments, API[cls])

    @property
    def layer_names(self) -> tuple[str, ...]:
        return LAYER_NAMES

    def not_provided(self) -> dict[tuple[str, str], str]:
        """Quantities the user's code did not return, found while taking gradients."""
        return dict(self._not_provided)

    def preprocess(self, images) -> np.ndarray:
        """``(N, 28, 28)`` uint8 -> ``image / 255 - 0.5`` in ``dtype`` (the blog's cnn.py)."""
        images = check_images(images)
        return (images / 255 - 0.5).astype(self.dtype)

    def params(self) -> Tree:
        return {
            "conv2d": {"kernel": self.conv.filters},
            "dense": {"kernel": self.softmax.weights, "bias": self.softmax.biases},
        }

    def _forward_one(self, image) -> tuple:
        conv = self.conv.forward(image)
        pooled = self.pool.forward(conv)
        probs = self.softmax.forward(pooled)
        return conv, pooled, probs

    def forward(self, x) -> dict[str, np.ndarray]:
        """Every layer's output, ``flatten`` the pool output in C order (the blog's Softmax
        flattens so) and ``dense`` the logits the blog's ``Softmax.forward`` caches in
        ``last_totals``."""
        outputs = {name: [] for name in LAYER_NAMES}
        for image in np.asarray(x):
            conv, pooled, probs = (np.array(a, copy=True) for a in self._forward_one(image))
            outputs["conv2d"].append(conv)
            outputs["max_pooling2d"].append(pooled)
            outputs["flatten"].append(pooled.reshape(-1))
            logits = _cached(self.softmax, "last_totals", (NUM_CLASSES,))
            outputs["dense"].append(np.array(logits, copy=True))
            outputs["softmax"].append(probs)
        return {name: np.stack(arrays) for name, arrays in outputs.items()}

    def gradients_and_probabilities(self, x, labels, need_input_grad: bool = True):
        """``(mean loss, grads, probabilities (N, 10))`` read from the user's ``backprop``
        (:func:`scratch.blog_api.backprop_gradients`); nothing is updated."""
        read = blog_api.backprop_gradients(self.conv, self.pool, self.softmax, np.asarray(x),
                                           np.asarray(labels), self.dtype,
                                           need_input_grad=need_input_grad)  # fmt: skip
        if read.image_gradient:
            self._not_provided.pop(("conv2d", "input"), None)
        else:
            self._not_provided[("conv2d", "input")] = (
                "Conv3x3.backprop returned None (the blog's first layer computes no gradient "
                "of its image)."
            )
        return read.loss, read.grads, read.probabilities

    def gradients(self, x, labels) -> tuple[np.floating, Tree]:
        loss, grads, _ = self.gradients_and_probabilities(x, labels)
        return self.dtype.type(loss), grads

    def train_step(self, x, labels, learning_rate) -> tuple[float, int]:
        """One SGD step; ``(loss, correct)`` before it.

        A batch of one runs the blog's training step through the user's own updates:
        forward, ``Softmax.backprop(gradient, lr)``, ``MaxPool2.backprop``,
        ``Conv3x3.backprop(gradient, lr)``. A larger batch (the blog has none) steps the
        weights by the mean of the gradients read from the user's ``backprop``.
        """
        x, labels = np.asarray(x), np.asarray(labels)
        lr = self.dtype.type(learning_rate)
        if len(x) == 1:
            return blog_api.backprop_step(self.conv, self.pool, self.softmax, x[0], int(labels[0]),
                                          lr, self.dtype)  # fmt: skip
        loss, grads, probs = self.gradients_and_probabilities(x, labels, need_input_grad=False)
        for layer, weights in self.params().items():
            for weight, array in weights.items():
                np.subtract(array, lr * grads[layer][weight], out=array)
        return loss, int(np.count_nonzero(probs.argmax(axis=1) == labels))


def _cached(layer, attribute: str, shape: tuple):
    """``layer.attribute``, which the blog API's ``forward`` sets; an :class:`ApiError`
    placed at the user's ``forward`` when it did not."""
    value = getattr(layer, attribute, None)
    if value is None:
        cls = type(layer).__name__
        raise ApiError(
            f"{cls}.forward did not set `self.{attribute}`, where the blog API caches the "
            f"logits (shape {shape}; compared as the `dense` output). Found after forward: "
            f"{describe_attributes(layer)}.",
            source_of(layer, "forward"),
        )
    return value


def build_user_blog(code: UserCode, seed: int = 0, dtype="float64") -> UserBlogModel:
    """The user's blog classes, loaded from ``code.path``, as a ``HarnessModel``."""
    return UserBlogModel(load(code), seed=seed, dtype=dtype, name=code.name)
