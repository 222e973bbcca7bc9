import os
import subprocess
import sys

import pytest

from reference import backend
from reference.testing import configured_floatx

LATE_FLOATX = """
import keras
layer = keras.layers.Dense(2)
from reference import backend
try:
    backend.configure("float64")
except RuntimeError as error:
    print(error)
"""


def test_configure_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match=r"argument `dtype`.*Received dtype='float16'"):
        backend.configure("float16")


@pytest.mark.keras
def test_process_is_configured_float64_and_refuses_another_dtype():
    import keras

    assert keras.config.floatx() == "float64" and backend.configured_dtype() == "float64"
    with pytest.raises(
        RuntimeError,
        match=r"configure\(dtype='float32'\): this process is "
        "already configured for 'float64'",
    ):
        backend.configure("float32")


def test_configure_after_a_keras_object_exists_is_refused():
    result = subprocess.run(
        [sys.executable, "-c", LATE_FLOATX],
        capture_output=True,
        text=True,
        check=True,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""},
    )
    assert "Keras floatx is 'float32' and 1 Keras object(s) already exist" in result.stdout
    assert "Dense 'dense'" in result.stdout


@pytest.mark.keras
def test_environment_reports_versions_threads_and_flags():
    env = backend.environment()
    assert env["floatx"] == "float64" and env["op_determinism"] is True
    for key in (
        "python",
        "numpy",
        "tensorflow",
        "keras",
        "TF_ENABLE_ONEDNN_OPTS",
        "intra_op_parallelism_threads",
        "inter_op_parallelism_threads",
        "platform",
    ):
        assert key in env, key


def test_run_in_dtype_process_returns_child_result():
    assert backend.run_in_dtype_process("float32", configured_floatx) == ("float32", "float32")


def test_run_in_dtype_process_reraises_child_error_with_its_traceback():
    with pytest.raises(ValueError, match="Received dtype='float16'") as info:
        backend.run_in_dtype_process("float64", backend.check_dtype, "float16")
    assert "in check_dtype" in str(info.value.__cause__)


def test_tensorflow_start_up_lines_are_held_back_and_other_lines_kept(capfd):
    from reference.backend import start_up_lines_filtered

    with start_up_lines_filtered():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
        os.write(2, b"W0000 something real went wrong\n")
    assert capfd.readouterr().err == "W0000 something real went wrong\n"


@pytest.mark.keras
def test_only_the_harness_own_step_retracing_warning_is_dropped():
    import logging

    from reference import backend, tf_backend

    backend.configure("float64")
    logger = tf_backend.tf.get_logger()
    assert any(isinstance(f, tf_backend.OwnRetracingFilter) for f in logger.filters)

    def passes(message: str) -> bool:
        record = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, message, (), None)
        return all(f.filter(record) for f in logger.filters)

    tail = " triggered tf.function retracing. Tracing is expensive ..."
    assert not passes("5 out of the last 13 calls to <function tape_step.<locals>.step at 0x7f"
                      + tail)  # fmt: skip
    assert passes("5 out of the last 13 calls to <function user_step at 0x7f" + tail)
    assert passes("a different warning about <function tape_step.<locals>.step at 0x7f")


def test_kept_processes_reuse_one_process_per_dtype_and_start_each_task_fresh():
    from parity import catalog
    from reference.testing import build_model, process_facts

    kept = backend.KeptProcesses()
    try:
        with kept.active():
            first = backend.run_in_dtype_process("float64", process_facts)
            kept.run("float64", catalog.AdamEpsilonInsideSqrt(), (build_model("chw"),), {})
            second = backend.run_in_dtype_process("float64", process_facts)
            other = backend.run_in_dtype_process("float32", configured_floatx)
        outside = backend.run_in_dtype_process("float64", process_facts)
    finally:
        kept.close()
    assert first[0] == second[0] != outside[0]  # reused inside the block only
    assert first[1:] == second[1:] == outside[1:]  # same seed, names, no leftover patch
    assert first[2] == "dense" and first[3] == "Adam._denominator"
    assert other == ("float32", "float32")
