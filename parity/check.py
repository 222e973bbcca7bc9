"""parity check PATH: the checks of `parity run` on your own numpy CNN.

``--api blog``: PATH is a folder laid out like the blog's repository (conv.py with Conv3x3,
maxpool.py with MaxPool2, softmax.py with Softmax; no other file there is imported: the
blog's cnn.py trains at import time) or one .py file defining the three classes. The blog
API ("CNNs, Part 2", Victor Zhou):

  Conv3x3(num_filters)       holds `filters` (num_filters, 3, 3); forward(image) takes
                             (h, w) and returns (h-2, w-2, num_filters);
                             backprop(d_L_d_out, learn_rate) updates `filters` and returns
                             the input gradient or None.
  MaxPool2()                 forward(input) maps (h, w, f) to (h//2, w//2, f);
                             backprop(d_L_d_out) returns the input gradient.
  Softmax(input_len, nodes)  holds `weights` (input_len, nodes) and `biases` (nodes,);
                             forward(input) flattens, caches the logits in `last_totals`
                             and returns the probabilities; backprop(d_L_d_out, learn_rate)
                             updates both and returns the input gradient (input's shape).

The network is the blog's: Conv3x3(8) -> MaxPool2() -> Softmax(13 * 13 * 8, 10), one
image at a time, inputs image / 255 - 0.5, loss -ln p[label], the initial gradient
-1 / p[label] at the label. It is compared with the Keras twin of model `zhou`, same
weights (the blog's initialisation, seeded). Gradients are read from your own backprop,
exactly: learn_rate = -1 on the real weights gives the input gradient (taken before the
update, as in the blog); weights set to zero and learn_rate = -1 leave exactly the
gradient in the weights; the weights are then restored bit for bit.
A backprop that returns None (the blog's first layer) makes that input gradient
NOT_PROVIDED; so is softmax/input, the gradient of the logits (the blog's Softmax
returns none; it equals the biases' gradient, compared as dense/bias). Training
(--epochs, on by default) steps through your own backprop with the learning rate, in the
blog's order.

``--api cs231n``: PATH is one .py file with the cs231n-style channels-first API
(one image per call): Conv(in_channels, out_channels, filter_size, pad=0, stride=1)
with `filters` (F, C, k, k) and `bias` (F,), MaxPool2x2(), Linear(in_features,
out_features) with `weights` (in, out) and `bias` (out,), optionally ReLU(), each
forward(x) taking one image (C, H, W) and backward(dout) returning dx or (dx, dw, db), and
softmax_loss(scores (N, K), y (N,)) -> (mean loss, dscores / N). The network is
Conv(1, 8, 3) -> [ReLU ->] MaxPool2x2 -> Linear(1352, 10) -> softmax_loss (models
`chw-relu` / `chw`: inputs image / 255, their weights); training steps the returned
(dw, db) with --optimizer. A layer that writes into the array it was given is a FAIL row
(`gradients LAYER/input in place`, or `dout in place` for backward). A file that also
defines BatchNorm(D, eps=1e-5, momentum=0.9), SpatialBatchNorm(C, ...) (`gamma`, `beta`,
`running_mean`, `running_var`; forward(x, mode="train"|"test"); backward(dout) -> (dx,
dgamma, dbeta)) and Dropout(p) (p keeps; forward caches `mask`) runs in
`cs231n-3layer-chw` (batches of 32; the harness reads each mask your Dropout draws, gives it
to Keras and replays the draw), and each of those classes is also judged alone (check
`modal`). See README, "Batch norm and dropout in the cs231n API".

``PATH:FUNCTION``: any other channels-first network. PATH is a .py file and FUNCTION a
function in it, called as FUNCTION(seed=SEED, dtype=DTYPE) (DTYPE a numpy dtype, once
per --dtypes entry), returning a scratch.user_factory.Subject: `network`, a spec.Network
made with spec.networks.channels_first (the Keras twin, the layouts and the reference
preprocessing come from it); `layers`, your layer objects in forward order with the
cs231n API above, one per layer of the description but the folded ones and the Softmax,
weights made from SEED in DTYPE; `loss`, softmax_loss; optionally `preprocess`, raw
(N, H, W) uint8 images -> (N, C, H, W), judged against the description's reference on raw
images, in each dtype (the `preprocessing/input` row; every other check feeds both sides
the reference; without `preprocess` the row is NOT_PROVIDED and the reference is assumed).
A factory that cannot be called or returns something else: exit 2, naming the attribute.

``--api auto`` (the default) picks the API whose names the code defines. Defaults to
--dtypes float64; with float32 the weights and inputs are float32 and arrays are reported
in the dtype your code returns (np.zeros buffers are float64: a dtype FAIL). Could not
find, import or construct the code as its API says (a class, weight attribute or shape,
method or signature that is not the API's, a constructor that raises): exit 2, naming
the file and line, the class, the attribute, the rule and what was found.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from parity.compare import EXIT_USAGE

CHECK_HELP = (
    "run the parity checks on your own numpy CNN (PATH): blog or cs231n API, or "
    "PATH:FUNCTION, a factory describing any channels-first network"
)
DEFAULT_DTYPES = "float64"


def add_check_arguments(check: argparse.ArgumentParser, add_run_arguments) -> None:
    """``PATH``, ``--api``, then every option of ``parity run`` but ``--models``
    (``add_run_arguments(parser, models=False)``, given by ``parity.cli``, which imports
    this module: no import back)."""
    from scratch.user_code import APIS, AUTO

    check.add_argument(
        "path",
        metavar="PATH",
        help="a folder with conv.py, maxpool.py, softmax.py (blog), one .py file "
        "(blog or cs231n), or FILE.py:FUNCTION (a factory; see above)",
    )
    check.add_argument("--api", default=AUTO,
                       help=f"{', '.join((AUTO, *APIS))}: the API of the code; auto picks the "
                            "one whose names the code defines (default: %(default)s)")  # fmt: skip
    add_run_arguments(check, models=False)
    check.set_defaults(dtypes=DEFAULT_DTYPES)


def check_command(args, run_command) -> int:
    """Locate and import the user's code (exit 2 on failure, before any report folder
    exists), then run exactly what ``parity run`` runs, on it: ``run_command(args,
    user_code=...)``, given by ``parity.cli``."""
    from scratch.user_code import UserCodeError, load, locate

    try:
        code = locate(args.path, args.api)
        load(code)  # the dtype processes import it again from the path
        _build_in_each_dtype(code, args)
    except UserCodeError as error:
        print(f"parity check: {error}", file=sys.stderr)
        return EXIT_USAGE
    return run_command(args, user_code=code)


def _build_in_each_dtype(code, args) -> None:
    """Build the user's model once per ``--dtypes`` entry (the ones that exist: a bad entry
    is reported by the run's own validation), as the dtype processes will: the classes
    constructed and checked against their API (weight names and shapes, method
    signatures), a factory called and what it returns checked. A fault there is bad input,
    a ``UserCodeError`` (exit 2) naming the file, class, attribute, rule and value, found
    before TensorFlow is imported or any report folder exists. Nothing of the user's runs
    but constructors (and the factory)."""
    from parity.options import UsageError, choices, integer
    from parity.runner import DEFAULT_DTYPES
    from scratch.models import build, register_user_code

    try:
        seed = integer("--seed", args.seed, 0, 2**32 - 1)
        dtypes = choices("--dtypes", args.dtypes, DEFAULT_DTYPES)
    except UsageError:
        return  # run_command reports it
    register_user_code(code)
    for dtype in dtypes:
        build(code.name, seed=seed, dtype=dtype)


def name_user_classes(results, code) -> None:
    """Add a ``user_class`` column (the user's class behind each layer) to every table
    with a ``layer`` column: ``conv2d`` -> ``Conv3x3`` (``--api blog``) or ``Conv``
    (``--api cs231n``); blank for ``loss`` and ``-``. ``code``: the located
    ``scratch.user_code.UserCode``."""
    from scratch import user_blog, user_cs231n, user_factory

    if code.api == "factory":
        classes = user_factory.class_names(user_factory.call_factory(code))
    else:
        classes = {"blog": user_blog.USER_CLASSES, "cs231n": user_cs231n.USER_CLASSES}[code.api]
    for name, frame in results.tables.items():
        if "layer" in frame.columns:
            column = frame["layer"].map(classes).fillna("")
            at = frame.columns.get_loc("layer") + 1
            results.tables[name] = _with_column(frame, at, "user_class", column)


def _with_column(frame: pd.DataFrame, at: int, name: str, values: pd.Series) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(at, name, values)
    return frame
