"""The optimizers the training check runs, one table: each name's Keras class, its
hyper-parameters (the same keywords build the scratch twin in ``scratch.optim``), its
default learning rate and its slots (the per-weight state lockstep syncs both ways).

Importing this module imports neither Keras nor TensorFlow (``parity --help`` reads the
table); :func:`keras_optimizer` imports Keras when called.

========  =========================================  ==========  ==========================
name      Keras 3 class and hyper-parameters          default lr  slots (Keras's attribute)
========  =========================================  ==========  ==========================
sgd       SGD()                                       0.005       none
momentum  SGD(momentum=0.9)                           0.0005      momentum (``momentums``)
nesterov  SGD(momentum=0.9, nesterov=True)            0.0005      momentum (``momentums``)
rmsprop   RMSprop(rho=0.9, momentum=0.0, eps=1e-7)    0.001       velocity (``_velocities``)
adam      Adam(beta_1=0.9, beta_2=0.999, eps=1e-7)    0.001       momentum, velocity
adamw     AdamW(weight_decay=0.004, Adam's betas/eps) 0.001       momentum, velocity
========  =========================================  ==========  ==========================

Where the defaults come from: the blog's SGD learning rate 0.005 (Keras's default 0.01)
for sgd; a tenth of it, 0.0005, for momentum and nesterov (the same effective step
lr / (1 - momentum); at 0.005 the blog network diverges to -ln 0, measured at step 2,001
of seed 0); momentum 0.9 is cs231n's
``sgd_momentum`` default and issue 15's (Keras's default 0.0 is plain SGD); every other
value is Keras 3.15's own default (``keras/src/optimizers/{rmsprop,adam,adamw}.py``:
``learning_rate=0.001``, ``rho=0.9``, ``momentum=0.0``, ``beta_1=0.9``, ``beta_2=0.999``,
``epsilon=1e-7``, ``weight_decay=0.004``). RMSprop's momentum stays 0 (its ``_momentums``
slot would then exist; this table would list it).

A network may train with its own rate under an optimizer (``spec.Network.learning_rates``,
over this table's; :func:`default_learning_rate`): cs231n-3layer takes issue 15's recipe,
momentum and Nesterov at 0.01 (batch 32, batch norm: the blog network's divergence at 0.005
does not apply), Adam at 1e-3. A learning rate the user gives wins over both.

A slot's name is the one Keras gives ``add_optimizer_variables`` and ``scratch.optim``
keys its state by (``"momentum"``, ``"velocity"``); ``attribute`` is the list on the Keras
optimizer that holds one slot variable per weight, in the order the optimizer was built.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OptimizerKind:
    """One row of :data:`OPTIMIZERS`.

    ``keras_class``: the class name in ``keras.optimizers`` and in ``scratch.optim``;
    ``options``: its hyper-parameters besides the learning rate (both sides take the same
    keywords); ``slots``: ``(slot, Keras attribute)`` pairs; ``normalised``: the step is
    divided by a running RMS of the gradient (RMSprop, Adam, AdamW), which turns a
    cancelling gradient's rounding into an O(lr) relative error (parity.tolerances).
    """

    name: str
    keras_class: str
    learning_rate: float
    options: dict = field(default_factory=dict)
    slots: tuple[tuple[str, str], ...] = ()
    normalised: bool = False

    @property
    def slot_names(self) -> tuple[str, ...]:
        return tuple(slot for slot, _ in self.slots)

    def describe(self) -> str:
        """``SGD(momentum=0.9)``: the Keras class with its non-default-lr options."""
        return f"{self.keras_class}({', '.join(f'{k}={v}' for k, v in self.options.items())})"


_ADAM = dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7)
_ADAM_SLOTS = (("momentum", "_momentums"), ("velocity", "_velocities"))

OPTIMIZERS: dict[str, OptimizerKind] = {
    kind.name: kind
    for kind in (
        OptimizerKind("sgd", "SGD", 0.005),
        OptimizerKind("momentum", "SGD", 0.0005, dict(momentum=0.9),
                      (("momentum", "momentums"),)),
        OptimizerKind("nesterov", "SGD", 0.0005, dict(momentum=0.9, nesterov=True),
                      (("momentum", "momentums"),)),
        OptimizerKind("rmsprop", "RMSprop", 0.001, dict(rho=0.9, momentum=0.0, epsilon=1e-7),
                      (("velocity", "_velocities"),), normalised=True),
        OptimizerKind("adam", "Adam", 0.001, dict(_ADAM), _ADAM_SLOTS, normalised=True),
        OptimizerKind("adamw", "AdamW", 0.001, dict(weight_decay=0.004, **_ADAM), _ADAM_SLOTS,
                      normalised=True),
    )
}  # fmt: skip
NAMES = tuple(OPTIMIZERS)
SLOT_NAMES = ("momentum", "velocity")  # every slot name of the table, in quantity order


def kind_of(name: str) -> OptimizerKind:
    """The table's row for ``name``; ValueError names the choices."""
    try:
        return OPTIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid value for argument `optimizer`. Expected one of {NAMES}. "
            f"Received optimizer={name!r}."
        ) from None


def default_learning_rate(name: str, network=None) -> float:
    """The learning rate of optimizer ``name`` when the user names none: ``network``'s own
    (a ``spec.Network``: its ``learning_rates[name]``) where it has one, else the table's.
    ValueError names the choices for an unknown ``name``, or the network's key that names
    no optimizer."""
    kind = kind_of(name)
    rates = {} if network is None else network.learning_rates
    unknown = sorted(set(rates) - set(NAMES))
    if unknown:
        raise ValueError(
            f"Network `{network.name}`: `learning_rates` keys must be optimizers {NAMES}. "
            f"Received {unknown}."
        )
    return float(rates.get(name, kind.learning_rate))


def scratch_optimizer(name: str, learning_rate: float):
    """The ``scratch.optim`` optimizer of ``name`` at ``learning_rate``."""
    from scratch import optim

    kind = kind_of(name)
    return getattr(optim, kind.keras_class)(learning_rate=learning_rate, **kind.options)


def keras_optimizer(name: str, learning_rate: float):
    """The ``keras.optimizers`` optimizer of ``name`` (built in the process's floatx:
    ``reference.training.make_optimizer`` checks its learning rate)."""
    import keras

    kind = kind_of(name)
    return getattr(keras.optimizers, kind.keras_class)(learning_rate=learning_rate,
                                                       **kind.options)  # fmt: skip


def keras_slots(optimizer, name: str, count: int) -> list[list]:
    """Per slot of ``name`` (table order), the Keras optimizer's list of slot variables
    (``count`` of them, one per weight, in build order). RuntimeError when the installed
    Keras keeps them elsewhere: lockstep could not set the optimizer's state."""
    out = []
    for slot, attribute in kind_of(name).slots:
        variables = getattr(optimizer, attribute, None)
        if variables is None or len(variables) != count:
            import keras

            raise RuntimeError(
                f"Keras {keras.__version__}: {type(optimizer).__name__} keeps no `{attribute}` "
                f"list with one `{slot}` slot per weight ({count}); lockstep cannot set its "
                f"state."
            )
        out.append(list(variables))
    return out
