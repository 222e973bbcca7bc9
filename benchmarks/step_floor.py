"""The floor of a numpy training step of the blog network (batch 1, float64), beside issue 16's
targets, measured in one run.

    python benchmarks/step_floor.py [--images 1000] [--repeats 5] [--calls 20000]

Issue 16 asks the scratch step (``ZhouCNN.train_scaled``) to be >= 30x faster than Keras
``fit`` and >= 5x the whole-epoch ``tf.function``. This script says whether numpy can get
there on this machine. It times, in this process's CPU time (``time.process_time``, best of
``--repeats`` rounds of ``--calls`` calls: the cores are shared, the minimum is the least
disturbed):

(a) each operation a numpy step of the blog's formulas performs whatever its code looks
    like, on the step's own operands (taken from ``ZhouCNN`` after a forward and backward
    pass on a real image: the same shapes, dtypes and memory layouts). Each BLAS operand is
    checked to give bit for bit what the step computed, so the table times the step's own
    products:

    - the five BLAS calls: conv matmul ``(676, 9) @ (9, 8)``, dense forward
      ``(1352,) @ (1352, 10)``, input-gradient product ``(1352, 10) @ (10,)``, outer product
      of the dense gradient (a k=1 matmul, 13,520 products) and filter gradient
      ``(8, 676) @ (676, 9)``;
    - the large elementwise operations (>= 1,000 values): the im2col gather, the gather of
      the pool's 2x2 windows (its HWC input to window-major order), the window max, the
      max mask, the first-maximum selection, the gradient scatter, and the dense kernel's
      SGD update ``w - lr * g`` (a multiply and a subtract over 13,520 values: Keras's
      exact arithmetic, which the lockstep check compares per step);
    - the small operations (<= 72 values): bias, softmax, loss gradient, logits gradient,
      bias and filter updates, each a numpy call whose cost is its call overhead;

(b) an empty ufunc call (``np.add`` on empty arrays: numpy's per-call overhead).

It prints the floor: the BLAS calls alone, then every operation of (a) (their sum, and the
same calls run back to back as one "bare step"), next to 1/30 of ``fit``'s and 1/5 of the
epoch function's CPU time per step and the scratch step's own, all from
``bench_step``'s functions in this run (same images, same order). A script, not a test:
timings are never asserted.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from bench_step import (
    LR,
    TARGETS,
    bench_epoch_function,
    bench_fit,
    bench_scratch_step,
    cpu_model,
    load_average,
    load_images,
)


@dataclass(frozen=True)
class Op:
    """One timed operation: its group (``BLAS``, ``large``, ``small``), what it is, how many
    numpy calls it makes, and the zero-argument callable that does it."""

    group: str
    name: str
    calls: int
    run: object


def step_operands(image, label: int) -> dict:
    """The arrays of one ``ZhouCNN`` step on ``image`` (28, 28) uint8: a forward pass, then
    each layer's ``backward`` (the gradient part of ``backprop``; the weights stay)."""
    from scratch.zhou_cnn import ZhouCNN

    net = ZhouCNN(seed=0, dtype="float64")
    x = net.scale(image)
    conv_out = net.conv._forward(x)
    pooled = net.pool.forward(conv_out)
    probs = net.softmax.forward(pooled)
    g = net._loss_gradient(label)
    d_pooled = net.softmax.backward(g)
    d_conv = net.pool.backward(d_pooled)
    net.conv.backward(d_conv, input_grad=False)
    h, w, c = conv_out.shape
    corner, _, windows_index, offset_by_weight = net.pool._index_tables(h, w, c)
    return dict(
        net=net, x=x, label=label, g=g, probs=probs, conv_out=conv_out, d_pooled=d_pooled,
        d_conv=d_conv, regions=net.conv.last_regions,
        kernel=net.conv.filters.reshape(net.conv.num_filters, 9).T,
        gather_index=net.conv._regions_index(*x.shape).T, windows_index=windows_index,
        corner=corner, offset_by_weight=offset_by_weight,
    )  # fmt: skip


def check_blas_operands(o: dict) -> None:
    """Each BLAS call of :func:`unavoidable_ops` gives bit for bit what the step computed
    (so the floor times the step's own products); AssertionError naming the one that does
    not."""
    net = o["net"]
    sm, conv = net.softmax, net.conv
    t = sm.d_L_d_t
    expected = {
        "conv matmul": (o["regions"] @ o["kernel"], o["conv_out"].reshape(-1, 8)),
        "dense forward": (sm.last_input @ sm.weights + sm.biases, sm.last_totals),
        "input-gradient product": (sm.weights @ t, o["d_pooled"].reshape(-1)),
        "outer product": (np.dot(t[:, None], sm.last_input[None, :]).T, sm.d_L_d_w),
        "filter gradient": (o["d_conv"].reshape(-1, 8).T @ o["regions"],
                            conv.d_L_d_filters.reshape(8, 9)),
    }  # fmt: skip
    for name, (ours, step) in expected.items():
        if ours.shape != step.shape or not np.array_equal(ours, step):
            raise AssertionError(
                f"{name}: the timed operation does not reproduce the step's result (shape "
                f"{ours.shape} vs {step.shape}, max |difference| "
                f"{np.abs(ours - step).max() if ours.shape == step.shape else 'n/a'})."
            )


def unavoidable_ops(o: dict) -> list[Op]:
    """The operations a numpy step of the blog's formulas performs, on the step's operands."""
    net = o["net"]
    sm = net.softmax
    x, regions, kernel = o["x"].reshape(-1), o["regions"], o["kernel"]
    flat, weights, biases, t = sm.last_input, sm.weights, sm.biases, sm.d_L_d_t
    d_conv2 = o["d_conv"].reshape(-1, 8)
    conv_flat = o["conv_out"].reshape(-1)
    windows = conv_flat.take(o["windows_index"])
    pooled = windows.max(axis=0)
    is_max = windows == pooled
    weight = np.array([[4], [3], [2], [1]], dtype=np.uint8)
    weighted = is_max.view(np.uint8) * weight
    best = weighted.max(axis=0)
    scatter_index = o["corner"] + o["offset_by_weight"].take(best)
    d_pooled = o["d_pooled"].reshape(-1)
    gradient, step = np.empty_like(weights), np.empty_like(weights)
    lr = np.float64(LR)
    totals, probs, g = sm.last_totals, o["probs"], o["g"]
    filters, d_filters = net.conv.filters, net.conv.d_L_d_filters
    scratch_w = weights.copy(order="F")  # the update writes here, not into the net
    return [
        Op("BLAS", "conv matmul (676, 9) @ (9, 8)", 1, lambda: regions @ kernel),
        Op("BLAS", "dense forward (1352,) @ (1352, 10)", 1, lambda: flat @ weights),
        Op("BLAS", "input-gradient product (1352, 10) @ (10,)", 1, lambda: weights @ t),
        Op("BLAS", "outer product, dense gradient (k=1 matmul)", 1,
           lambda: np.dot(t[:, None], flat[None, :])),
        Op("BLAS", "filter gradient (8, 676) @ (676, 9)", 1, lambda: d_conv2.T @ regions),
        Op("large", "im2col gather (9, 676) of 784 pixels", 1,
           lambda: x.take(o["gather_index"])),
        Op("large", "pool windows gather, HWC -> (4, 1352)", 1,
           lambda: conv_flat.take(o["windows_index"])),
        Op("large", "window max over (4, 1352)", 1, lambda: windows.max(axis=0)),
        Op("large", "max mask (4, 1352) == (1352,)", 1, lambda: windows == pooled),
        Op("large", "first maximum: weight, max over (4, 1352)", 2,
           lambda: (is_max.view(np.uint8) * weight).max(axis=0)),
        Op("large", "scatter index: corner + offset.take (1352)", 2,
           lambda: o["corner"] + o["offset_by_weight"].take(best)),
        Op("large", "gradient scatter: zeros (5408), 1352 writes", 2,
           lambda: np.zeros(5408).__setitem__(scatter_index, d_pooled)),
        Op("update", "dense SGD: lr * g (13,520)", 1,
           lambda: np.multiply(gradient, lr, out=step)),
        Op("update", "dense SGD: w - (lr * g) (13,520)", 1,
           lambda: np.subtract(scratch_w, step, out=scratch_w)),
        Op("small", "bias add (10)", 1, lambda: np.add(totals, biases)),
        Op("small", "softmax: max, subtract, exp, sum, divide (10)", 5, lambda: _softmax(totals)),
        Op("small", "accuracy: argmax (10)", 1, lambda: probs.argmax()),
        Op("small", "loss gradient: zeros, one write (10)", 2, lambda: _loss_gradient(probs, 3)),
        Op("small", "logits gradient p * (g - g @ p) (10)", 3, lambda: probs * (g - g @ probs)),
        Op("small", "bias update b - lr * g (10)", 2, lambda: biases - lr * t),
        Op("small", "filter update f - lr * g (72)", 2, lambda: filters - lr * d_filters),
    ]  # fmt: skip


def _softmax(totals):
    exp = np.exp(totals - totals.max())
    return exp / exp.sum()


def _loss_gradient(probs, label):
    gradient = np.zeros(10)
    gradient[label] = -1 / probs[label]
    return gradient


def empty_call():
    """``np.add`` on empty float64 arrays into an empty output: numpy's per-call overhead."""
    empty = np.empty(0)
    return lambda: np.add(empty, empty, out=empty)


def best_cpu_per_call(run, calls: int, repeats: int) -> float:
    """Best CPU seconds per call of ``run`` over ``repeats`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            run()
        best = min(best, time.process_time() - start)
    return best / calls


def bare_step(ops: list[Op]):
    """Every operation of ``ops`` once, back to back (one Python call per operation)."""
    runs = [op.run for op in ops]

    def run():
        for op in runs:
            op()

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)
    images, labels = load_images(args.images)
    load_before = load_average()

    operands = step_operands(images[0], int(labels[0]))
    check_blas_operands(operands)
    ops = unavoidable_ops(operands)
    op_us = {op.name: best_cpu_per_call(op.run, args.calls, args.repeats) * 1e6 for op in ops}
    empty_us = best_cpu_per_call(empty_call(), args.calls, args.repeats) * 1e6
    bare_us = best_cpu_per_call(bare_step(ops), args.calls // 10, args.repeats) * 1e6

    from reference import backend

    backend.configure("float64")  # floatx before any Keras object (DESIGN.md)
    n = len(images)
    per_step = {}
    for name, bench in (("scratch step", bench_scratch_step), ("keras fit", bench_fit),
                        ("keras epoch function", bench_epoch_function)):  # fmt: skip
        (_, cpu), _ = bench(images, labels, args.repeats)
        per_step[name] = cpu / n * 1e6
    print(report(ops, op_us, empty_us, bare_us, per_step, args, (load_before, load_average())))


def report(ops, op_us, empty_us, bare_us, per_step, args, loads) -> str:
    """The floor table (markdown), the floors and the comparison with issue 16's targets.

    The lower bound of a numpy step: the five BLAS calls and the dense SGD update at their
    measured cost (no numpy form of the step does less arithmetic: the alternatives measured
    slower, see README), plus every other numpy call of the step at the cost of an empty
    call (it cannot cost less).
    """
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M')}, {cpu_model()}, load average {loads[0]} before and "
        f"{loads[1]} after; CPU us per call, best of {args.repeats} x {args.calls} calls; "
        f"numpy {np.__version__}:",
        "",
        "| group | operation | numpy calls | CPU us |",
        "|---|---|---|---|",
    ]
    lines += [f"| {op.group} | {op.name} | {op.calls} | {op_us[op.name]:.2f} |" for op in ops]
    lines.append(f"| - | empty ufunc call (`np.add` on empty arrays) | 1 | {empty_us:.2f} |")
    groups = ("BLAS", "update", "large", "small")
    us = {g: sum(op_us[op.name] for op in ops if op.group == g) for g in groups}
    calls = {g: sum(op.calls for op in ops if op.group == g) for g in groups}
    other_calls = calls["large"] + calls["small"]
    bound = us["BLAS"] + us["update"] + other_calls * empty_us
    summed = sum(us.values())
    lines += [
        "",
        f"- BLAS calls: {us['BLAS']:.1f} us; dense SGD update: {us['update']:.1f} us; the other "
        f"{other_calls} numpy calls: {us['large'] + us['small']:.1f} us "
        f"({other_calls * empty_us:.1f} us at an empty call's cost).",
        f"- lower bound of a numpy step: {bound:.1f} us (BLAS + update + {other_calls} empty "
        f"calls); every operation: {summed:.1f} us summed, {bare_us:.1f} us run back to back.",
    ]
    scratch = per_step["scratch step"]
    need = {name: per_step[name] / TARGETS[name] for name in TARGETS}
    lines.append(
        f"- this run, CPU us per step over {args.images} images: scratch step {scratch:.1f} "
        f"({scratch / bound:.2f}x the lower bound); `fit` {per_step['keras fit']:.1f}, so 30x "
        f"needs <= {need['keras fit']:.1f}; the epoch function "
        f"{per_step['keras epoch function']:.1f}, so 5x needs <= "
        f"{need['keras epoch function']:.1f}."
    )
    labels = {"keras fit": "30x `fit`", "keras epoch function": "5x the epoch function"}
    for name, label in labels.items():
        if us["BLAS"] > need[name]:
            verdict = f"out of reach for numpy: the BLAS calls alone take {us['BLAS']:.1f} us"
        elif bound > need[name]:
            verdict = f"out of reach for numpy: the lower bound is {bound:.1f} us"
        else:
            verdict = f"not excluded: the lower bound is {bound:.1f} us"
        lines.append(f"- {label} (<= {need[name]:.1f} us): {verdict}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
