"""Sweep: a user's layers at settings the fixed network never uses, each judged alone.

The fixed cs231n network is ``Conv(1, 8, 3)`` (C = 1, stride 1, no padding, even sizes),
where real bugs compute exactly the right numbers: ``dw`` with F and C swapped (exact when
C = 1), the stride missing from ``dx`` (exact at stride 1), ``np.pad(x, pad)`` padding the
channel axis (a no-op at pad 0). Here the user's classes are built at other settings, drawn
by hypothesis (:func:`draw_settings`: seeded by ``--seed``, no database, generation only,
so a rerun draws the same settings):

- ``Conv`` with C > 1, F > 1, F != C, kernel 2-5, pad 0/1, stride 1/2, odd H != W (of
  every two, one at stride 2 and pad 1);
- ``MaxPool2x2`` on odd H and W (the last row and column cropped);
- ``Linear`` with in_features != out_features, C > 1;
- ``ReLU`` (when the file defines one) on inputs holding exact zeros (the gradient there
  is 0, TensorFlow's rule);
- ``softmax_loss`` on batches of N > 1.

Each layer runs alone in a one-layer network description (``spec.Network``: the layer,
then the Softmax the description requires), through the one channels-first adapter
(``scratch.cs231n_api``: one image at a time, weight gradients summed), at O(1) weights
(``common.randomize``), on seeded N(0, 1) inputs and a seeded upstream gradient. Its Keras
counterpart is the twin's own layers (``reference.twin``: Conv2D after ZeroPadding2D for
``pad``, MaxPooling2D, Dense after Flatten, ReLU; softmax and categorical cross-entropy),
fed the same input and upstream gradient (``reference.probes.isolated``). Rows:
``output`` (forward budget), ``input``, ``kernel``, ``bias`` (gradients budget), and for
``softmax_loss`` the mean ``loss`` (forward budget) and ``input`` (dscores), float64
only; each row's ``setting`` and message name the configuration
(``conv C=3 F=5 k=3 pad=1 stride=2 H=9 W=7``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from parity import tolerances
from parity.checks.common import progress, randomize
from parity.compare import compare, error, not_provided

CHECK = "sweep"
DTYPE = "float64"
EXAMPLES = 3  # hypothesis examples: 3 settings per kind, 6 convs; ~1 s on the example
IMAGES = 2  # images per setting: per-image calls, weight gradients summed over them
ZERO_FRACTION = 0.3  # ReLU inputs set to exactly 0.0


@dataclasses.dataclass(frozen=True)
class Setting:
    """One layer at one configuration: ``kind`` (``conv``, ``pool``, ``relu``,
    ``linear``, ``loss``) and its numbers (``C``, ``H``, ``W``, ``F``, ``k``, ``pad``,
    ``stride``, ``out``, ``N``, ``K``; unused ones 0)."""

    kind: str
    C: int = 0
    H: int = 0
    W: int = 0
    F: int = 0
    k: int = 0
    pad: int = 0
    stride: int = 0
    out: int = 0
    N: int = 0
    K: int = 0

    @property
    def label(self) -> str:
        """e.g. ``conv C=3 F=5 k=3 pad=1 stride=2 H=9 W=7``."""
        fields = dict(
            conv=("C", "F", "k", "pad", "stride", "H", "W"), pool=("C", "H", "W"),
            relu=("C", "H", "W"), linear=("C", "H", "W", "out"), loss=("N", "K"),
        )[self.kind]  # fmt: skip
        name = "softmax_loss" if self.kind == "loss" else self.kind
        return " ".join([name, *(f"{f}={getattr(self, f)}" for f in fields)])


# -- the settings (hypothesis) --------------------------------------------------------------


def _strategies():
    """``{kind: strategy}`` of a Setting, or for ``conv`` of two: one at stride 2 and pad
    1 (the settings the fixed network's bugs hide from), one with both drawn."""
    from hypothesis import strategies as st

    @st.composite
    def conv(draw, stride=None, pad=None):
        c = draw(st.integers(2, 4))
        f = draw(st.integers(2, 6).filter(lambda f: f != c))
        stride = stride or draw(st.sampled_from((2, 1)))
        pad = draw(st.sampled_from((1, 0))) if pad is None else pad
        # Odd H needs an odd kernel at stride 2 for the windows to tile H + 2 pad (the API
        # has Keras's floor, the shipped scratch.chw.Conv refuses what does not tile).
        k = draw(st.sampled_from((3, 5) if stride == 2 else (3, 2, 4)))
        sizes = [k - 2 * pad + stride * draw(st.integers(1, 4)) for _ in range(2)]
        h, w = (s + (s % 2 == 0) * stride if stride == 1 else s for s in sizes)  # odd
        return Setting("conv", C=c, F=f, k=k, pad=pad, stride=stride, H=h, W=w + 2 * (h == w))

    odd = st.integers(1, 4).map(lambda n: 2 * n + 1)
    return dict(
        conv=st.tuples(conv(stride=2, pad=1), conv()),  # every example: stride 2 and pad 1
        pool=st.builds(Setting, st.just("pool"), C=st.integers(1, 3), H=odd, W=odd),
        relu=st.builds(Setting, st.just("relu"), C=st.integers(1, 3), H=st.integers(2, 5),
                       W=st.integers(2, 5)),
        linear=st.builds(Setting, st.just("linear"), C=st.integers(2, 3), H=st.integers(1, 3),
                         W=st.integers(1, 3), out=st.integers(2, 6)).filter(
            lambda s: s.C * s.H * s.W != s.out),
        loss=st.builds(Setting, st.just("loss"), N=st.integers(2, 6), K=st.integers(2, 10)),
    )  # fmt: skip


def draw_settings(seed: int, kinds=("conv", "pool", "relu", "linear", "loss"),
                  examples: int = EXAMPLES) -> list[Setting]:  # fmt: skip
    """``examples`` distinct settings per kind (twice that for ``conv``), drawn by
    hypothesis from ``seed`` alone: ``@seed(seed)``, no example database, the generate
    phase only (no shrinking, no replay), so the same seed and hypothesis version draw the
    same list."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    strategies = _strategies()
    found: list[Setting] = []

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, phases=(Phase.generate,),
              deadline=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.tuples(*(strategies[kind] for kind in kinds)))
    def collect(drawn):
        for item in drawn:
            found.extend(item if isinstance(item, tuple) else (item,))

    collect()
    distinct = list(dict.fromkeys(found))
    per_kind = {kind: 2 * examples if kind == "conv" else examples for kind in kinds}
    return [s for kind in kinds for s in [s for s in distinct if s.kind == kind][: per_kind[kind]]]


# -- the layers alone ---------------------------------------------------------------------


def _layers(setting: Setting) -> list[tuple[str, dict]]:
    """The setting's layer as network-description layers (before the Softmax)."""
    if setting.kind == "conv":
        padding = [("ZeroPadding2D", dict(padding=setting.pad, folded=True))] if setting.pad else []
        return [*padding, ("Conv2D", dict(filters=setting.F, kernel_size=setting.k,
                                          strides=setting.stride))]  # fmt: skip
    if setting.kind in ("linear", "loss"):
        units = setting.out if setting.kind == "linear" else setting.K
        return [("Flatten", dict(folded=True)), ("Dense", dict(units=units))]
    return [("MaxPooling2D", dict(pool_size=2)) if setting.kind == "pool" else ("ReLU", {})]


def _network(setting: Setting):
    """A channels-first description of the layer alone, input ``(H, W, C)``."""
    from spec.layers import stack
    from spec.networks import channels_first

    layers = stack(*_layers(setting), ("Softmax", {}))
    shape = (1, 1, 1) if setting.kind == "loss" else (setting.H, setting.W, setting.C)
    network = channels_first(f"sweep-{setting.kind}", layers)
    return dataclasses.replace(network, input_shape=shape)


def sweep_rows(found: dict, name: str, seed: int) -> list[dict]:
    """Every setting of :func:`draw_settings` for the user's classes ``found`` (``{name:
    class or function}`` of a cs231n file): report rows (``check`` ``sweep``, ``state``
    ``random``, a ``setting`` column). A setting whose code raises is an ``ERROR`` row
    naming the setting; the other settings still run. Needs a float64 Keras process."""
    kinds = ("conv", "pool", *(("relu",) if "ReLU" in found else ()), "linear", "loss")
    start, rows = time.perf_counter(), []
    for i, setting in enumerate(draw_settings(seed, kinds)):
        rng = np.random.default_rng([seed, 5, i])
        try:
            records = _judge(found, name, setting, seed, rng)
        except Exception as exc:
            layer = "softmax" if setting.kind == "loss" else _network(setting).native_names[0]
            records = [error(layer, "-", exc)]
        rows += [_row(name, setting, r) for r in records]
    progress(f"{name} {DTYPE}: sweep of {len(kinds)} layers done in "
             f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return rows


def _judge(found: dict, name: str, setting: Setting, seed: int, rng) -> list:
    """The comparisons of one setting (user side through the adapter, Keras side through
    the twin's own layers)."""
    from reference import probes
    from reference.twin import twin
    from scratch.user_cs231n import UserCs231nModel

    model = UserCs231nModel(found, seed=seed, dtype=DTYPE, name=name, network=_network(setting))
    randomize(model, seed)  # O(1) weights: N(0, 1/fan_in) kernels, N(0, 0.1) biases
    keras_model = twin(model, DTYPE)
    if setting.kind == "loss":
        return _judge_loss(model, keras_model, setting, rng)
    layer = model.layer_names[0]
    x = rng.standard_normal((IMAGES, setting.C, setting.H, setting.W))
    if setting.kind == "relu":
        x[rng.random(x.shape) < ZERO_FRACTION] = 0.0
    dout = rng.standard_normal((IMAGES, *model.spec.native_shape(layer, "output")[1:]))
    ours = {"output": model.forward(x)[layer], **model.backward_from(x, dout)[layer]}
    output, theirs = probes.isolated(keras_model, model, layer, x, upstream=dout)
    theirs["output"] = output
    absent = model.not_provided()
    quantities = ("output", "input", *model.params().get(layer, {}))
    return [_compare(layer, q, ours.get(q), theirs[q], absent.get((layer, q))) for q in quantities]


def _judge_loss(model, keras_model, setting: Setting, rng) -> list:
    """``softmax_loss`` on ``(N, K)`` scores ~ N(0, 3): the mean loss and dscores, against
    Keras's softmax and categorical cross-entropy (from the logits, unclipped)."""
    import keras

    from reference import probes

    scores = 3.0 * rng.standard_normal((setting.N, setting.K))
    labels = rng.integers(setting.K, size=setting.N)
    loss, dscores = model.loss(scores, labels)
    _, theirs = probes.isolated(keras_model, model, "softmax", scores, labels=labels)
    target = probes.one_hot(labels, setting.K, scores.dtype)
    softmax = keras_model.get_layer("softmax")
    tensor = keras.ops.convert_to_tensor
    keras_loss = probes.loss_function()(tensor(target), softmax(tensor(scores)))
    return [_compare("softmax", "loss", loss, keras.ops.convert_to_numpy(keras_loss)[()], None),
            _compare("softmax", "input", dscores, theirs["input"], None)]  # fmt: skip


def _compare(layer: str, quantity: str, ours, theirs, reason):
    budget = tolerances.get("gradients" if quantity in ("input", "kernel", "bias")
                            else "forward", DTYPE)  # fmt: skip
    limits = dict(atol=budget.atol, rtol=budget.rtol)
    if ours is None and reason is not None:
        return not_provided(layer, quantity, reason, **limits)
    return compare(ours, theirs, layer=layer, quantity=quantity, expected_dtype=DTYPE, **limits)


def _row(name: str, setting: Setting, record) -> dict:
    record = record.with_status(record.status, f"{setting.label}: {record.message}")
    return dict(check=CHECK, model=name, dtype=DTYPE, state="random", setting=setting.label,
                **record.as_row())  # fmt: skip
