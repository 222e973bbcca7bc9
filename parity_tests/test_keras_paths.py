"""The epoch function (a whole epoch of Keras's step in one tf.function), the training
check's default Keras path, gives fit's weights, per-step losses and correct flags bit for
bit: same ops, same process, same CPU (not a cross-library float32 verdict).

Two epochs of a 150-image prefix in chunks of 3 steps (an epoch's last chunk is short;
at batch 32 so is its last batch), each epoch in its own order.
"""

import numpy as np
import pytest

from parity.data import load_mnist
from reference.backend import run_in_dtype_process
from reference.testing import keras_path_runs

CASES = {  # id: (model, optimizer, learning rate, batch size)
    "zhou-sgd-b1": ("zhou", "sgd", 0.005, 1),
    "two-conv-sgd-b1": ("two-conv", "sgd", 0.005, 1),
    "zhou-adam-b32": ("zhou", "adam", 0.001, 32),
    "chw-relu-adam-b32": ("chw-relu", "adam", 0.001, 32),
}
IMAGES, EPOCHS, CHUNK_STEPS = 150, 2, 3
pytestmark = pytest.mark.xdist_group("keras_paths")  # one worker runs `runs` once per dtype


@pytest.fixture(scope="module", params=["float64", "float32"])
def runs(request):
    mnist = load_mnist()
    images, labels = mnist.train_images[:IMAGES], mnist.train_labels[:IMAGES]
    result = run_in_dtype_process(
        request.param, keras_path_runs, CASES, images, labels, EPOCHS, CHUNK_STEPS
    )
    return request.param, result


def differences(fit, epoch) -> list[str]:
    """What differs between two ``TrainingRun``s, with the largest difference."""
    out = []
    pairs = [("losses", fit.losses, epoch.losses), ("correct", fit.correct, epoch.correct)]
    for e, (mine, theirs) in enumerate(zip(fit.epoch_weights, epoch.epoch_weights, strict=True)):
        pairs += [(f"epoch {e + 1} {layer}/{weight}", mine[layer][weight], theirs[layer][weight])
                  for layer in mine for weight in mine[layer]]  # fmt: skip
    for name, a, b in pairs:
        if a.shape != b.shape or a.dtype != b.dtype:
            out.append(f"{name}: fit {a.shape} {a.dtype}, epoch {b.shape} {b.dtype}")
        elif not np.array_equal(a, b):
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            out.append(f"{name}: max |fit - epoch| {diff.max():.3e} at {np.argmax(diff)}")
    return out


@pytest.mark.parametrize("case", CASES)
def test_epoch_function_is_bit_identical_to_fit(runs, case):
    dtype, result = runs
    fit, epoch = result[case]["fit"], result[case]["epoch"]
    steps = -(-IMAGES // CASES[case][3])
    assert fit.steps_per_epoch == epoch.steps_per_epoch == [steps] * EPOCHS
    assert epoch.losses.dtype == dtype and epoch.learning_rate == fit.learning_rate
    assert not differences(fit, epoch), "\n".join(differences(fit, epoch))
