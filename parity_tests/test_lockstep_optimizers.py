import numpy as np
import pytest

from parity import catalog, lockstep, tolerances
from parity.checks import training, training_config
from parity.data import load_mnist
from parity.lockstep_judge import BUDGET_KEYS
from reference.backend import run_in_dtype_process
from reference.optimizers import NAMES, OPTIMIZERS, kind_of, scratch_optimizer
from scratch.models import build

SLOTTED = [name for name in NAMES if OPTIMIZERS[name].slots]
SHORT = dict(epochs=1, train_size=100, test_size=50, seed=0, keras_paths=())
pytestmark = pytest.mark.xdist_group("lockstep_optimizers")  # `runs` once per dtype


# -- the table (numpy only) ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_has_a_budget_in_both_dtypes(name):
    weights, state = BUDGET_KEYS[name]
    for dtype in ("float64", "float32"):
        assert tolerances.get(weights, dtype).rtol > 0
        assert state is None if not OPTIMIZERS[name].slots else tolerances.get(state, dtype).rtol


@pytest.mark.parametrize("name", NAMES)
def test_the_table_names_the_slots_scratch_keeps(name):
    model = build("chw", seed=0, dtype="float64")
    optimizer = scratch_optimizer(name, OPTIMIZERS[name].learning_rate)
    _, grads = model.gradients(model.preprocess(load_mnist().test_images[:2]), np.array([0, 1]))
    optimizer.update(model.params(), grads)
    assert tuple(optimizer.slots) == kind_of(name).slot_names
    assert type(optimizer).__name__ == kind_of(name).keras_class


def test_unknown_optimizer_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"argument `optimizer`. Expected one of \('sgd', "
                       r"'momentum'.*Received optimizer='adagrad'"):  # fmt: skip
        kind_of("adagrad")
    with pytest.raises(ValueError, match=r"Received optimizer='adagrad'"):
        training_config.TrainingConfig("zhou", "float64", optimizer="adagrad")


# -- one Keras step from scratch's weights and slots (float64, this process) -------------


def _warm(name, batches=3):
    """zhou and ``name``'s scratch optimizer after ``batches`` steps (nonzero slots, a
    nonzero iteration count), and the batch of the next step."""
    data = load_mnist()
    model = build("zhou", seed=0, dtype="float64")
    optimizer = scratch_optimizer(name, OPTIMIZERS[name].learning_rate)
    x, labels = model.preprocess(data.train_images[:32]), data.train_labels[:32]
    for k in range(batches):
        _, grads = model.gradients(x[8 * k : 8 * k + 8], labels[8 * k : 8 * k + 8])
        optimizer.update(model.params(), grads)
    return model, optimizer, x[24:], labels[24:]


def _lockstep_step(name):
    """The judged entries of one lockstep step of ``name`` from warmed-up state."""
    from reference.lockstep_step import LockstepStepper
    from reference.twin import twin

    model, optimizer, x, labels = _warm(name)
    before = lockstep.Snapshot.take(model, optimizer)
    stepper = LockstepStepper(twin(model, "float64"), model, optimizer=name,
                              learning_rate=OPTIMIZERS[name].learning_rate)  # fmt: skip
    _, grads = model.gradients(x, labels)
    optimizer.update(model.params(), grads)
    lock = lockstep.Lockstep(stepper, model, "float64", name)
    lock.step(before, lockstep.Snapshot.take(model, optimizer), x, labels, "step 4")
    return {(layer, quantity): track.worst[0] for (layer, quantity), track in
            lock.judge.tracks.items()}  # fmt: skip


@pytest.mark.keras
@pytest.mark.parametrize("name", NAMES)
def test_keras_step_from_scratch_weights_and_slots_matches_scratch_step(name):
    entries = _lockstep_step(name)
    for slot in kind_of(name).slot_names:  # every slot of every weight is compared
        assert {("conv2d", f"kernel {slot}"), ("dense", f"bias {slot}")} <= set(entries)
    assert entries[("optimizer", "iterations")].mine == 4
    over = {key: e.use for key, e in entries.items() if e.use > 1}
    assert not over, over


@pytest.mark.keras
@pytest.mark.parametrize("name", SLOTTED)
def test_a_keras_step_that_ignores_scratch_slots_is_caught(name, monkeypatch):
    from reference.lockstep_step import LockstepStepper

    def zeros(self, state, slot, layer, weight):  # the bug: Keras starts from zero slots
        return np.zeros_like(self.model.params()[layer][weight])

    monkeypatch.setattr(LockstepStepper, "_slot", zeros)
    entries = _lockstep_step(name)
    assert max(e.use for e in entries.values()) > 10


# -- short lockstep runs, both dtypes (each in its dtype's process) -------------------------


RUNS = {  # name: (model, optimizer, batch size, hooks)
    **{name: ("zhou", name, 1 if not OPTIMIZERS[name].normalised else 8, ()) for name in NAMES},
    # the catalog's hooks patch scratch.optim for the rest of the child process: last
    **{name: ("zhou", optimizer, batch_size, catalog.hooks_of(catalog.BY_NAME[name]))
       for name, optimizer, batch_size in (("momentum-velocity-sign-flipped", "momentum", 1),
                                           ("rmsprop-epsilon-outside-sqrt", "rmsprop", 8))},
}  # fmt: skip


@pytest.fixture(scope="module", params=["float64", "float32"])
def runs(request):
    """Every run of ``RUNS`` in one process of the dtype (~10 s)."""
    mnist, jobs = load_mnist(), []
    for model, optimizer, batch_size, hooks in RUNS.values():
        config = training_config.TrainingConfig(
            model, request.param, optimizer=optimizer, batch_size=batch_size,
            learning_rate=OPTIMIZERS[optimizer].learning_rate, **SHORT)  # fmt: skip
        jobs.append((config, training_config.pools_from(mnist, config), hooks))
    results = run_in_dtype_process(request.param, training.run_many, jobs)
    return dict(zip(RUNS, results, strict=True))


def _failed(result) -> set[str]:
    return {f"{c.layer}/{c.quantity}" for _, _, c in result.comparisons if not c.passed}


@pytest.mark.parametrize("name", NAMES)
def test_lockstep_passes_correct_code_and_compares_every_slot(runs, name):
    result = runs[name]
    quantities = {c.quantity for path, _, c in result.comparisons if path == "lockstep"}
    for slot in kind_of(name).slot_names:
        assert {f"kernel {slot} update", f"bias {slot} update"} <= quantities
    assert result.passed, result.failures()
    rows = result.training[result.training["keras_path"] == "lockstep"]
    assert rows["state_budget_use"].notna().all() == bool(kind_of(name).slots)


def test_momentum_velocity_sign_flipped_fails_its_slots_at_step_1(runs):
    result = runs["momentum-velocity-sign-flipped"]
    assert {"dense/kernel update", "dense/kernel momentum update"} <= _failed(result)
    rows = result.training[result.training["keras_path"] == "lockstep"]
    assert rows.iloc[0]["update_budget_use"] > 1 and rows.iloc[0]["state_budget_use"] > 1


def test_rmsprop_epsilon_outside_sqrt_fails_the_update_not_the_velocity(runs):
    failed = _failed(runs["rmsprop-epsilon-outside-sqrt"])
    assert "conv2d/kernel update" in failed
    assert not {f for f in failed if "velocity" in f}  # v = rho v + (1 - rho) g^2 is right


@pytest.mark.parametrize("name", NAMES)
def test_free_running_budgets_follow_the_optimizer(name):
    config = training_config.TrainingConfig("zhou", "float64", optimizer=name)
    loss = "training-loss-rmsprop" if name == "rmsprop" else "training-loss"
    weights = "training-weights-adam" if OPTIMIZERS[name].normalised else "training-weights"
    assert training_config.loss_atol(config, "epoch") == tolerances.get(loss, "float64").atol
    assert training_config.weight_rtol(config) == tolerances.get(weights, "float64").rtol
