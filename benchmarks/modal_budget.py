"""What the ``modal`` check's budgets must cover on correct code: the measurement behind
``parity.tolerances``' ``MODAL_*`` constants.

    .venv/bin/python benchmarks/modal_budget.py --dtype float32 [--seeds 10]

For each seed, each shape of :data:`SHAPES` (the network's own two and others) and each
correct implementation of the cs231n API (``examples/cs231n_bn/layers.py``, a user's file;
``scratch.chw_norm``, the project's; :class:`TextbookBatchNorm`, the way most users write
it), runs the check's own judging
(``parity.checks.modal._judge_batch_norm`` / ``_judge_dropout``: the same statistics, input
and upstream gradient draws, Keras's ``BatchNormalization`` alone on the same numbers) and
prints the worst norm-wise relative error per quantity kind with where it was, beside the
budgets in force. Rows are measured whatever their verdict.

A script, not a test: a few seconds per seed and dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from parity.checks import modal  # noqa: E402
from scratch.user_cs231n_norm import NORM_LAYERS  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cs231n_bn" / "layers.py"
# (N, C, H, W) for SpatialBatchNorm, (N, D) for BatchNorm and Dropout; the first of each is
# the network's (scratch.user_cs231n_norm.NORM_LAYERS)
SHAPES = {
    "SpatialBatchNorm": ((32, 8, 26, 26), (8, 3, 5, 7), (64, 16, 13, 13), (2, 4, 28, 28)),
    "BatchNorm": ((32, 32), (4, 10), (128, 100), (32, 1352)),
    "Dropout": ((32, 32), (8, 3, 5, 7)),
}


class TextbookBatchNorm:
    """cs231n's batch norm as most users write it: numpy's ``x.mean(axis=0)``,
    ``x.var(axis=0)`` and ``sum(axis=0)`` over the rows (in float32 a running sum down
    the non-contiguous axis, not the pairwise sums of the example and of scratch)."""

    def __init__(self, D, eps=1e-5, momentum=0.9):
        self.gamma, self.beta = np.ones(D), np.zeros(D)
        self.running_mean, self.running_var = np.zeros(D), np.ones(D)
        self.eps, self.momentum = eps, momentum

    def forward(self, x, mode="train"):
        if mode == "train":
            mean, var = x.mean(axis=0), x.var(axis=0)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            mean, var = self.running_mean, self.running_var
        self.std = np.sqrt(var + x.dtype.type(self.eps))
        self.xhat, self.mode = (x - mean) / self.std, mode
        return self.gamma * self.xhat + self.beta

    def backward(self, dout):
        dgamma, dbeta = (dout * self.xhat).sum(axis=0), dout.sum(axis=0)
        dxhat = dout * self.gamma
        if self.mode == "test":
            return dxhat / self.std, dgamma, dbeta
        n = dout.shape[0]
        dx = n * dxhat - dxhat.sum(axis=0) - self.xhat * (dxhat * self.xhat).sum(axis=0)
        return dx / (n * self.std), dgamma, dbeta


def implementations(dtype: str) -> dict[str, dict]:
    """``{name: {cs231n class name: constructor}}``: the example file, scratch's own, and
    the textbook batch norm (the example's spatial wrapper around it, its dropout)."""
    spec = importlib.util.spec_from_file_location("cs231n_bn_layers", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from scratch import chw_norm

    ours = {c: functools.partial(getattr(chw_norm, c), dtype=dtype) for c in SHAPES}

    class TextbookSpatial(example.SpatialBatchNorm):
        def __init__(self, C, eps=1e-5, momentum=0.9):
            self.bn = TextbookBatchNorm(C, eps, momentum)

    textbook = {"BatchNorm": TextbookBatchNorm, "SpatialBatchNorm": TextbookSpatial,
                "Dropout": example.Dropout}  # fmt: skip
    return {"example": {c: getattr(example, c) for c in SHAPES}, "chw_norm": ours,
            "textbook": textbook}  # fmt: skip


def layers():
    """Every (NormLayer, shape) measured: the network's layers at each shape of SHAPES."""
    for layer in NORM_LAYERS:
        for shape in SHAPES[layer.cls]:
            args = (shape[1],) if layer.is_batch_norm else layer.args
            yield dataclasses.replace(layer, args=args, input_shape=shape)


def kind(quantity: str) -> str:
    """``dx``, ``dgamma``/``dbeta``, ``output``, ``running`` statistics; `` (inference)``."""
    base, _, mode = quantity.partition(" ")
    name = {"input": "dx", "gamma": "dgamma, dbeta", "beta": "dgamma, dbeta"}.get(base, base)
    name = "running statistics" if base.startswith("running") else name
    return f"{name} {mode}".strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--dtype", default="float32", choices=("float64", "float32"))
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    from parity import tolerances
    from reference import backend

    backend.configure(args.dtype)
    dtype = np.dtype(args.dtype)
    worst: dict = {}
    for name, classes in implementations(args.dtype).items():
        for seed in range(args.seeds):
            for i, layer in enumerate(layers()):
                rng = np.random.default_rng([seed, modal.STREAM, i])
                user = classes[layer.cls](*layer.args, **layer.kwargs)
                judge = modal._judge_batch_norm if layer.is_batch_norm else modal._judge_dropout
                for r in judge(user, layer, dtype, rng):
                    if r.stage != "values":
                        raise RuntimeError(f"{name} {layer.name} {r.quantity}: {r.message}")
                    key = (layer.cls if layer.cls == "Dropout" else "batch norm", kind(r.quantity))
                    if r.rel_error > worst.get(key, (-1.0,))[0]:
                        worst[key] = (
                            r.rel_error,
                            f"{name} seed {seed} {layer.cls}"
                            f"{layer.input_shape} {r.quantity} (budget {r.rtol:.3g})",
                        )
    print(f"modal {args.dtype}, seeds 0-{args.seeds - 1}, shapes {SHAPES}")
    for key, (value, where) in sorted(worst.items()):
        print(f"  {key[0]:10s} {key[1]:32s} {value:10.3g}  {where}")
    print(f"  (forward, gradients budgets of the network: "
          f"{tolerances.get('forward-batchnorm', args.dtype).rtol:g}, "
          f"{tolerances.get('gradients-batchnorm', args.dtype).rtol:g})")  # fmt: skip


if __name__ == "__main__":
    main()
