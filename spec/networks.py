"""The harness's networks, described once: ``NETWORKS[name]`` (registry names of
``scratch.models``).

Layouts are relative to Keras (channels-last activations, kernels ``(kh, kw, C, F)``,
Flatten in H, W, C order). The records below are the only statement of each family's
layout; ``reference.layout``'s named conversions are built from the same records.
"""

from __future__ import annotations

from dataclasses import replace

from spec.layers import stack
from spec.network import Network, Preprocess
from spec.transforms import ExpandDims, FlattenOrder, Permute

MNIST = (28, 28, 1)  # per-example Keras input
BLOG_SCALING = Preprocess(255.0, -0.5)  # the blog's cnn.py: image / 255 - 0.5
UNIT_SCALING = Preprocess(255.0, 0.0)  # the channels-first document: image / 255

# The blog (one image at a time, HWC): images (N, H, W) = Keras (N, H, W, 1); filters
# (F, kh, kw) = Keras (kh, kw, 1, F): axes moved to (kh, kw, F), then the unit C axis.
BLOG_IMAGES = (ExpandDims(3),)
BLOG_FILTERS = (Permute((1, 2, 0)), ExpandDims(2))
# Channels-first: activations NCHW = Keras NHWC; filters (F, C, kh, kw) = Keras
# (kh, kw, C, F); a Linear's rows in C, H, W flatten order = Keras's H, W, C rows.
NCHW = (Permute((0, 2, 3, 1)),)
CHW_FILTERS = (Permute((2, 3, 1, 0)),)
CHW_ROWS = (FlattenOrder(0, "CHW"),)
CHW_VECTORS = (FlattenOrder(1, "CHW"),)  # (N, C*H*W) activations


def _blog_layers():
    return stack(
        ("Conv2D", dict(filters=8, kernel_size=3, use_bias=False)),
        ("MaxPooling2D", dict(pool_size=2)),
        ("Flatten", {}),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    )


ZHOU = Network(
    "zhou", MNIST, _blog_layers(), BLOG_SCALING,
    layouts={("conv2d", "input"): BLOG_IMAGES, ("conv2d", "kernel"): BLOG_FILTERS},
)  # fmt: skip

# The blog network from the general NHWC layers: Keras layouts throughout.
ZHOU_SEQ = Network("zhou-seq", MNIST, _blog_layers(), BLOG_SCALING)

TWO_CONV = Network(
    "two-conv", MNIST,
    stack(
        ("Conv2D", dict(filters=8, kernel_size=3, padding="same")),
        ("ReLU", {}),
        ("MaxPooling2D", dict(pool_size=2)),
        ("Conv2D", dict(filters=16, kernel_size=3, strides=2, padding="same")),
        ("ReLU", {}),
        ("Flatten", {}),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    ),
    BLOG_SCALING,
)  # fmt: skip


def channels_first(name: str, layers, preprocess=UNIT_SCALING) -> Network:
    """A channels-first network (the document's ``Conv``, ``MaxPool2x2``, ``Linear``):
    NCHW activations, ``(F, C, kh, kw)`` filters, every Dense after a Flatten with rows
    in C, H, W order (its Flatten folded into it: a Linear flattens inside)."""
    layers = tuple(layers)
    layouts = {}
    for i, layer in enumerate(layers):
        if layer.kind == "Conv2D":
            layouts[(layer.name, "kernel")] = CHW_FILTERS
        if layer.kind == "Dense" and i and layers[i - 1].kind == "Flatten":
            layouts[(layer.name, "kernel")] = CHW_ROWS
    return Network(name, MNIST, layers, preprocess, layouts=layouts, activations=NCHW)


def _chw_layers(relu: bool):
    return stack(
        ("Conv2D", dict(filters=8, kernel_size=3)),
        *([("ReLU", {})] if relu else []),
        ("MaxPooling2D", dict(pool_size=2)),
        ("Flatten", dict(folded=True)),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    )


CHW = channels_first("chw", _chw_layers(relu=False))
CHW_RELU = channels_first("chw-relu", _chw_layers(relu=True))

# Settings no network above exercises (issue 12): asymmetric "same" padding at stride 2,
# C > 1 and F > 1 in one conv, pools that crop an odd row and column, overlapping pool
# windows (3, strides 2), and for the channels-first family explicit padding with stride.
NHWC_ODD = Network(
    "nhwc-odd", MNIST,
    stack(
        ("Conv2D", dict(filters=6, kernel_size=3, strides=2, padding="same")),  # 14x14x6
        ("ReLU", {}),
        ("Conv2D", dict(filters=10, kernel_size=2)),  # 13x13x10
        ("MaxPooling2D", dict(pool_size=2)),  # 6x6x10: the odd row and column cropped
        ("Conv2D", dict(filters=12, kernel_size=3, padding="same")),  # 6x6x12
        ("MaxPooling2D", dict(pool_size=3, strides=2)),  # 2x2x12, overlapping windows
        ("Flatten", {}),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    ),
    BLOG_SCALING,
)  # fmt: skip

# The Conv(1, 6, 3, pad=1, stride=2) has 28 + 2 - 3 = 27 rows to stride over: Keras
# floors to 14 and never reads the last padded row (scratch.chw.Conv floors the same way
# since issue 15; it rejected such strides when this network was written). Kernel 4 tiles
# (26 / 2) and gives the same 14x14.
CHW_ODD = channels_first(
    "chw-odd",
    stack(
        ("ZeroPadding2D", dict(padding=1, folded=True)),  # Conv(pad=1): 30x30
        ("Conv2D", dict(filters=6, kernel_size=4, strides=2)),  # 14x14x6
        ("Conv2D", dict(filters=10, kernel_size=2)),  # 13x13x10
        ("MaxPooling2D", dict(pool_size=2)),  # 6x6x10: the odd row and column cropped
        ("Flatten", dict(folded=True)),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    ),
)


# LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition"),
# as MNIST users write it: tanh, average pooling, 32x32 inputs. The 32x32 is a layer,
# ZeroPadding2D(2), not preprocessing: the data stay MNIST's 28x28 images like every other
# model's, and both sides pad (its backward, a crop, is derived too). Pixels are scaled to
# [0, 1] so that the padded zeros are the background's own value (with the blog's
# [-0.5, 0.5] a frame of +0.5 would ring every digit).
def _lenet5_layers(folded: bool):
    """LeNet-5's layers; ``folded``: its ZeroPadding2D and Flatten done inside the next
    layer (the channels-first ``Conv(pad=2)`` and ``Linear``)."""
    return stack(
        ("ZeroPadding2D", dict(padding=2, folded=folded)),  # 32x32x1
        ("Conv2D", dict(filters=6, kernel_size=5)),  # 28x28x6
        ("Tanh", {}),
        ("AveragePooling2D", dict(pool_size=2)),  # 14x14x6
        ("Conv2D", dict(filters=16, kernel_size=5)),  # 10x10x16
        ("Tanh", {}),
        ("AveragePooling2D", dict(pool_size=2)),  # 5x5x16
        ("Flatten", dict(folded=folded)),  # 400
        ("Dense", dict(units=120)),
        ("Tanh", {}),
        ("Dense", dict(units=84)),
        ("Tanh", {}),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    )


LENET5 = Network("lenet5", MNIST, _lenet5_layers(folded=False), UNIT_SCALING)
# The same LeNet-5 channels-first (scratch.chw_layers' Tanh and AvgPool): NCHW activations,
# (F, C, kh, kw) filters, the first Linear's rows in C, H, W order.
LENET5_CHW = channels_first("lenet5-chw", _lenet5_layers(folded=True))

# The channels-first layers LeNet-5 leaves out (issue 15): TensorFlow's asymmetric 'same'
# padding at stride 2 (28 -> 14 and 14 -> 7 pad 0 rows on top, 1 below; on odd 7 a kernel
# of 4 pads 1 on top, 2 below), Sigmoid, LeakyReLU, and a global average pool feeding the
# Linear (no Flatten: its (N, C) output is the same in both layouts). The kinked LeakyReLU
# is not after the first conv: there MNIST's zero background makes every background
# pre-activation equal the bias, which starts at 0 and moved < 1e-5 in 300 steps (its
# gradient is ~1e-8 at the 1e-3 initial scale), so a bias step of FD's 1e-5 crossed the
# kink in every image and the trained state's derivations judged 0 of 24 bias points
# (INCONCLUSIVE, measured, seed 0).
CHW_SAME = channels_first(
    "chw-same",
    stack(
        ("Conv2D", dict(filters=6, kernel_size=3, strides=2, padding="same")),  # 14x14x6
        ("Sigmoid", {}),
        ("Conv2D", dict(filters=8, kernel_size=3, strides=2, padding="same")),  # 7x7x8
        ("LeakyReLU", {}),
        ("Conv2D", dict(filters=10, kernel_size=4, strides=2, padding="same")),  # 4x4x10
        ("GlobalAveragePooling2D", {}),  # 10
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    ),
)

# cs231n's batch-norm conventions (assignment 2, layers.py: batchnorm_forward's defaults),
# passed to Keras explicitly: Keras's own defaults are momentum 0.99, epsilon 1e-3. Both
# libraries update ``running = momentum * running + (1 - momentum) * batch`` with the biased
# batch variance, so cs231n's (momentum, eps) ARE Keras's (momentum, epsilon): a mapping of
# defaults, not of formulas. Dropout: cs231n's p is the keep probability; rate = 1 - p.
CS231N_MOMENTUM, CS231N_EPSILON = 0.9, 1e-5
CS231N_KEEP = 0.5  # dropout_forward's p in the assignment's examples


# The cs231n three-layer convnet with batch norm and dropout (assignment 2's ThreeLayerConvNet
# plus its batchnorm/dropout layers), small enough to be fast: conv - spatial batch norm -
# relu - 2x2 max pool - affine - batch norm - relu - dropout - affine - softmax. The layers
# before a batch norm have no bias: batch norm subtracts the batch mean, so such a bias has
# a gradient that is exactly 0 in exact arithmetic and only rounding in floating point (a
# norm-wise comparison of two roundings is meaningless); Keras's documentation recommends
# use_bias=False there too. Pixels in [0, 1]; trained with batches of 32 and, unless the
# user names a rate, issue 15's recipe: SGD momentum 0.9 at lr 0.01 (Nesterov's look-ahead
# too: the same SGD-with-momentum recipe), Adam at 1e-3 (the table's); other optimizers
# keep reference.optimizers' defaults.
CS231N_LEARNING_RATES = {"momentum": 0.01, "nesterov": 0.01, "adam": 1e-3}


def _cs231n_3layer_layers(folded: bool):
    return stack(
        ("Conv2D", dict(filters=8, kernel_size=3, use_bias=False)),  # 26x26x8
        ("BatchNormalization", dict(momentum=CS231N_MOMENTUM, epsilon=CS231N_EPSILON)),
        ("ReLU", {}),
        ("MaxPooling2D", dict(pool_size=2)),  # 13x13x8
        ("Flatten", dict(folded=folded)),  # 1352 (channels-first: inside the Linear)
        ("Dense", dict(units=32, use_bias=False)),
        ("BatchNormalization", dict(momentum=CS231N_MOMENTUM, epsilon=CS231N_EPSILON)),
        ("ReLU", {}),
        ("Dropout", dict(rate=1 - CS231N_KEEP)),
        ("Dense", dict(units=10)),
        ("Softmax", {}),
    )  # fmt: skip


CS231N_3LAYER = Network(
    "cs231n-3layer",
    MNIST,
    _cs231n_3layer_layers(folded=False),
    UNIT_SCALING,
    training_batch=32,
    learning_rates=CS231N_LEARNING_RATES,
)
# The same network in the channels-first family (scratch.chw's Conv, MaxPool2x2, Linear and
# scratch.chw_norm's SpatialBatchNorm, BatchNorm, Dropout; or a user's cs231n file defining
# the batch-norm classes): NCHW activations, so the spatial batch norm normalizes axis 1 of
# (N, 8, 26, 26); its gamma, beta and moving statistics are (C,) in both layouts.
CS231N_3LAYER_CHW = replace(
    channels_first("cs231n-3layer-chw", _cs231n_3layer_layers(folded=True)),
    training_batch=32,
    learning_rates=CS231N_LEARNING_RATES,
)

NETWORKS = {n.name: n for n in (ZHOU, TWO_CONV, CHW, CHW_RELU, ZHOU_SEQ, NHWC_ODD, CHW_ODD, LENET5,
                                CS231N_3LAYER, CS231N_3LAYER_CHW, LENET5_CHW,
                                CHW_SAME)}  # fmt: skip
