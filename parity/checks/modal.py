"""Modal: a user's cs231n ``SpatialBatchNorm``, ``BatchNorm`` and ``Dropout``, each alone
against its Keras layer, in training and inference mode (``parity check --api cs231n``).

Each class the file defines is built as its layer of ``spec.networks.CS231N_3LAYER``
(``scratch.user_cs231n_norm.NORM_LAYERS``: ``batch_normalization`` = ``SpatialBatchNorm(8,
eps=1e-5, momentum=0.9)`` on ``(32, 8, 26, 26)``, ``batch_normalization_1`` =
``BatchNorm(32, ...)`` on ``(32, 32)``, ``dropout`` = ``Dropout(0.5)`` on ``(32, 32)``),
given seeded O(1) statistics (``gamma`` ~ 1 + N(0, 0.1^2), ``beta`` and ``running_mean`` ~
N(0, 0.1^2), ``running_var`` ~ U(0.5, 1.5)), a seeded input ~ N(0.5, 2^2) and upstream
gradient ~ N(0, 1), and compared with ``reference.norm_probe`` on the same numbers:

- batch norm, ``mode="train"``: ``output``, ``input`` (dx), ``gamma``, ``beta`` (dgamma,
  dbeta), ``running_mean`` and ``running_var`` after the call (Keras's ``moving_mean``,
  ``moving_variance``); ``mode="test"`` from the same statistics: ``output (inference)``,
  ``input (inference)``;
- dropout, ``mode="train"``: the mask the user's layer drew (its ``mask`` after forward)
  is given to Keras's side, then ``output`` and ``input``; ``mode="test"``: ``output
  (inference)`` against ``x`` (the identity).

Budgets: the check's own, measured on these draws (``parity.tolerances.MODAL_*``,
``benchmarks/modal_budget.py``): ``modal-forward`` for outputs and running statistics
(both the batch statistics' reductions), ``modal-gradients`` for dx, dgamma, dbeta. Runs
in every dtype process.
"""

from __future__ import annotations

import numpy as np

from parity import tolerances
from parity.compare import compare, error

CHECK = "modal"
STREAM = 13  # keeps this check's draws apart from every other use of the seed
INFERENCE = " (inference)"


def modal_rows(found: dict, name: str, seed: int, dtype: str) -> list[dict]:
    """Report rows (``check`` ``modal``, ``state`` ``random``) for every batch-norm and
    dropout class in ``found`` (``{name: class}`` of a cs231n file); none when it defines
    none. A user method that raises, or returns the wrong form, is an ``ERROR`` row of its
    layer; the other layers still run."""
    from scratch.user_cs231n_norm import NORM_LAYERS, build_checked

    users = build_checked(found)
    rows = []
    for i, layer in enumerate(item for item in NORM_LAYERS if item.name in users):
        rng = np.random.default_rng([seed, STREAM, i])
        try:
            judge = _judge_batch_norm if layer.is_batch_norm else _judge_dropout
            records = judge(users[layer.name], layer, np.dtype(dtype), rng)
        except Exception as exc:
            records = [error(layer.name, "-", exc)]
        rows += [dict(check=CHECK, model=name, dtype=dtype, state="random", **r.as_row())
                 for r in records]  # fmt: skip
    return rows


def _statistics(layer, dtype, rng) -> dict[str, np.ndarray]:
    d = layer.args[0]
    return dict(
        gamma=1 + 0.1 * rng.standard_normal(d), beta=0.1 * rng.standard_normal(d),
        running_mean=0.1 * rng.standard_normal(d), running_var=rng.uniform(0.5, 1.5, d),
    )  # fmt: skip


def _set(user, statistics: dict, dtype) -> None:
    for attribute, value in statistics.items():
        setattr(user, attribute, value.astype(dtype))


def _judge_batch_norm(user, layer, dtype, rng) -> list:
    from reference.norm_probe import batch_norm
    from scratch.user_cs231n_norm import call_backward, call_forward

    statistics = _statistics(layer, dtype, rng)
    x = (0.5 + 2.0 * rng.standard_normal(layer.input_shape)).astype(dtype)
    dout = rng.standard_normal(layer.input_shape).astype(dtype)
    keras_weights = dict(gamma=statistics["gamma"], beta=statistics["beta"],
                         moving_mean=statistics["running_mean"],
                         moving_variance=statistics["running_var"])  # fmt: skip
    records = []
    for mode, suffix in (("train", ""), ("test", INFERENCE)):
        _set(user, statistics, dtype)  # both modes start from the same statistics
        ours = {"output": call_forward(user, x, mode)}
        if mode == "train":
            ours.update(running_mean=np.array(user.running_mean, copy=True),
                        running_var=np.array(user.running_var, copy=True))  # fmt: skip
        ours.update(call_backward(user, dout, batch_norm=True))
        theirs = batch_norm(x, keras_weights, layer.kwargs["momentum"], layer.kwargs["eps"],
                            training=mode == "train", dout=dout)  # fmt: skip
        theirs.update(running_mean=theirs["moving_mean"], running_var=theirs["moving_variance"])
        quantities = ("output", "input", "gamma", "beta", "running_mean", "running_var")
        records += [_compare(layer.name, q + suffix, ours[q], theirs[q], dtype)
                    for q in quantities[: 6 if mode == "train" else 2]]  # fmt: skip
    return records


def _judge_dropout(user, layer, dtype, rng) -> list:
    from reference.norm_probe import dropout
    from scratch.user_cs231n_norm import call_backward, call_forward, read_mask

    x = (0.5 + 2.0 * rng.standard_normal(layer.input_shape)).astype(dtype)
    dout = rng.standard_normal(layer.input_shape).astype(dtype)
    output = call_forward(user, x, "train")
    keep = read_mask(user, x.shape)  # the mask the user's layer drew, before its backward
    ours = {"output": output, **call_backward(user, dout, batch_norm=False)}
    theirs = dropout(x, keep, rate=1 - layer.args[0], dout=dout)
    inference = call_forward(user, x, "test")
    return [*(_compare(layer.name, q, ours[q], theirs[q], dtype) for q in ("output", "input")),
            _compare(layer.name, "output" + INFERENCE, inference, x, dtype)]  # fmt: skip


def _compare(layer: str, quantity: str, ours, theirs, dtype):
    check = "gradients" if quantity.split(" ")[0] in ("input", "gamma", "beta") else "forward"
    budget = tolerances.get(f"modal-{check}", dtype.name)
    return compare(ours, theirs, layer=layer, quantity=quantity, expected_dtype=dtype,
                   atol=budget.atol, rtol=budget.rtol)  # fmt: skip
