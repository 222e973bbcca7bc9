"""Keras/TensorFlow process setup: floatx, determinism, logging, one process per dtype.

The TensorFlow calls themselves (device probe, op determinism, versions and threads) are
``reference.tf_backend``'s; this module decides when they run.

Keras is exact in float64 only when ``keras.config.set_floatx("float64")`` runs before
any Keras object exists in the process (DESIGN.md: the compiled loss, the optimizer's
learning-rate variable, ``fit``'s slicing of numpy inputs and the loss metric all
follow floatx; a late floatx leaves kernels float32 without a warning). So a process
is configured once, for one dtype, and float32 and float64 work runs in separate
processes (``run_in_dtype_process``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import platform
import sys
import tempfile
from typing import Any

SUPPORTED_DTYPES = ("float32", "float64")
DEFAULT_SEED = 0
DEFAULT_TF_LOG_LEVEL = "2"  # hide TF's INFO and WARNING lines (oneDNN, CUDA stubs)

_configured: dict[str, Any] = {}  # {"dtype": ..., "seed": ...} once configure() ran


def check_dtype(dtype) -> str:
    """Return ``dtype``'s name if it is float32 or float64, else raise ValueError."""
    name = getattr(dtype, "name", dtype)
    if not isinstance(name, str) or name not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Invalid value for argument `dtype`. Expected one of {SUPPORTED_DTYPES}. "
            f"Received dtype={dtype!r}."
        )
    return name


def configure(dtype: str = "float64", seed: int = DEFAULT_SEED) -> None:
    """Set up this process's Keras for ``dtype``; call before any Keras object exists.

    Sets ``TF_CPP_MIN_LOG_LEVEL`` (default 2 unless the user set it), Keras floatx,
    ``keras.utils.set_random_seed(seed)`` and TensorFlow op determinism. Calling it
    again with the same dtype and seed is a no-op.

    Raises
    ------
    ValueError
        ``dtype`` is not float32/float64.
    RuntimeError
        The process was already configured for the other dtype, or Keras objects
        already exist under another floatx (they would keep that dtype silently).
    """
    name = check_dtype(dtype)
    if _configured.get("dtype") == name and _configured.get("seed") == seed:
        return  # already done in this process
    if _configured and _configured["dtype"] != name:
        raise RuntimeError(
            f"reference.backend.configure(dtype={name!r}): this process is already "
            f"configured for {_configured['dtype']!r}. One process per dtype: use "
            "reference.backend.run_in_dtype_process."
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    with start_up_lines_filtered():
        import keras

        from reference import tf_backend

        tf_backend.list_devices()  # CUDA's probe logs now, inside the filter

    current = keras.config.floatx()
    if current != name:
        existing = _existing_keras_objects()
        if existing:
            raise RuntimeError(
                f"reference.backend.configure(dtype={name!r}): Keras floatx is "
                f"{current!r} and {len(existing)} Keras object(s) already exist in this "
                f"process (e.g. {existing[0]}); they keep {current!r}. Configure before "
                "building any Keras object, or use reference.backend.run_in_dtype_process."
            )
        keras.config.set_floatx(name)
    keras.utils.set_random_seed(seed)
    tf_backend.enable_determinism()
    tf_backend.quiet_own_retracing()
    _configured.update(dtype=name, seed=seed)


# What TensorFlow 2.21 prints on every start on a CPU-only machine, whatever
# TF_CPP_MIN_LOG_LEVEL says (these lines come before absl::InitializeLog, and cuInit's is
# logged as an ERROR): measured, 7 lines per process. The oneDNN state is recorded in
# environment.json instead (``environment()``).
START_UP_LINES = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
)


@contextlib.contextmanager
def start_up_lines_filtered():
    """Hold back what is written to file descriptor 2 (TensorFlow's C++ logging writes
    there directly) and, on exit, write back every line but :data:`START_UP_LINES`, so a
    real warning of the start-up still reaches the user."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(k in line for k in START_UP_LINES)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def configured_dtype() -> str | None:
    """The dtype ``configure`` set in this process, or None."""
    return _configured.get("dtype")


def _existing_keras_objects(limit: int = 3) -> list[str]:
    """Descriptions of live Keras layers, variables and optimizers (at most ``limit``)."""
    import keras

    kinds = (keras.layers.Layer, keras.Variable, keras.optimizers.Optimizer)
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, kinds):
            found.append(f"{type(obj).__name__} {getattr(obj, 'name', '?')!r}")
            if len(found) >= limit:
                break
    return found


def environment() -> dict[str, Any]:
    """Versions, oneDNN flag, thread counts, platform and floatx, for reports."""
    import keras
    import numpy as np

    from reference import tf_backend

    backend = tf_backend.environment()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": backend["tensorflow"],
        "keras": keras.__version__,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (default on)"),
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "unset"),
        "intra_op_parallelism_threads": backend["intra_op_parallelism_threads"],
        "inter_op_parallelism_threads": backend["inter_op_parallelism_threads"],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "floatx": keras.config.floatx(),
        "configured_dtype": configured_dtype(),
        "seed": _configured.get("seed"),
        "op_determinism": bool(_configured),  # configure() enables it
    }


def run_in_dtype_process(dtype: str, fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a 'spawn' process configured for ``dtype``.

    ``fn``, its arguments and its result must be picklable (``fn`` defined at module
    level in an importable module). An exception in the child is re-raised here with
    the child's traceback text attached (as its ``__cause__``). Each call starts one
    fresh process (TensorFlow import: 6-8 s of CPU, measured), unless a
    :class:`KeptProcesses` is active: then its process for ``dtype`` runs the call.
    """
    name = check_dtype(dtype)
    if _active is not None:
        return _active.run(name, fn, args, kwargs)
    with _spawn(name) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _spawn(name: str) -> concurrent.futures.ProcessPoolExecutor:
    context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=1, mp_context=context, initializer=configure, initargs=(name,)
    )


_active: KeptProcesses | None = None  # the KeptProcesses run_in_dtype_process uses now
_after_task: list = []  # resets a kept process runs after every task (after_each_task)


def after_each_task(reset) -> None:
    """Register ``reset()`` to run in a kept process after every task, so that a global a
    task changed (e.g. ``parity.catalog``'s class patches) does not reach the next task.
    Registering the same function twice keeps one."""
    if reset not in _after_task:
        _after_task.append(reset)


class KeptProcesses:
    """One spawned process per dtype, kept and reused by ``run_in_dtype_process`` while
    :meth:`active`: a test suite pays TensorFlow's import once per dtype, not once per
    call (issue 16). Each task starts as a fresh process would: Keras's session cleared
    (its name counters too) and the default seed set; after it, the
    :func:`after_each_task` resets run. Output: the process writes to the file
    descriptors it inherited when it was spawned (a capture opened later, e.g. pytest's
    ``capfd``, does not see it: run such calls outside :meth:`active`).

    ``close()`` shuts the processes down; a process that died is replaced at the next call.
    """

    def __init__(self) -> None:
        import threading

        self._pools: dict[str, concurrent.futures.ProcessPoolExecutor] = {}
        self._lock = threading.Lock()

    def run(self, name: str, fn, args: tuple, kwargs: dict):
        with self._lock:
            pool = self._pools.get(name) or self._pools.setdefault(name, _spawn(name))
        try:
            return pool.submit(_fresh_task, fn, args, kwargs).result()
        except concurrent.futures.process.BrokenProcessPool:
            with self._lock:
                if self._pools.get(name) is pool:
                    del self._pools[name]
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    @contextlib.contextmanager
    def active(self):
        """``run_in_dtype_process`` uses these processes inside the block (nestable)."""
        global _active
        previous, _active = _active, self
        try:
            yield self
        finally:
            _active = previous

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(cancel_futures=True)


def _fresh_task(fn, args: tuple, kwargs: dict):
    """In a kept process: ``fn(*args, **kwargs)`` from the state a new process has."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(DEFAULT_SEED)
    _configured["seed"] = DEFAULT_SEED
    try:
        return fn(*args, **kwargs)
    finally:
        for reset in _after_task:
            reset()
