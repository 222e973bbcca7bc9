"""The model registry: ``build(name, seed=0, dtype="float64") -> HarnessModel``.

Each family registers ONE line in ``_BUILDERS``: ``"name": "module:function"``, where
``function(seed, dtype) -> HarnessModel``. Modules are imported on first use, so this
module imports before every family exists and never pulls in more than it builds.
``_INTERNAL`` builders are buildable but not listed in ``MODEL_NAMES`` (not shown to
users): they exist for cross-checks between families.
"""

from __future__ import annotations

import importlib

from scratch.protocol import HarnessModel, check_dtype

_BUILDERS: dict[str, str] = {
    # "name": "module:function"  -- one line per family, in the order users see them
    "zhou": "scratch.zhou_model:build_zhou",  # the blog network (scratch/zhou.py)
    "two-conv": "scratch.models:build_two_conv",
    "chw": "scratch.chw_model:build_chw",
    "chw-relu": "scratch.chw_model:build_chw_relu",
    "nhwc-odd": "scratch.models:build_nhwc_odd",  # a description only (spec.networks)
    "chw-odd": "scratch.chw_model:build_chw_odd",  # a description only (spec.networks)
    "lenet5": "scratch.models:build_lenet5",  # a description only (spec.networks)
    "cs231n-3layer": "scratch.models:build_cs231n_3layer",  # a description only
    "cs231n-3layer-chw": "scratch.chw_model:build_cs231n_3layer_chw",  # the same, channels-first
    "lenet5-chw": "scratch.chw_model:build_lenet5_chw",  # a description only
    "chw-same": "scratch.chw_model:build_chw_same",  # a description only
}

_INTERNAL: dict[str, str] = {
    "zhou-seq": "scratch.models:build_zhou_seq",  # the blog network from the general layers
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

# A user's own code (``parity check PATH``), registered at run time in each process that
# builds it: ``{name: scratch.user_code.UserCode}``. The description is picklable; the
# classes are imported from its path in the process that builds the model.
_USER_CODE: dict = {}
_USER_BUILDERS = {  # the API of the user's code -> its adapter, "module:function(code, ...)"
    "blog": "scratch.user_blog:build_user_blog",
    "cs231n": "scratch.user_cs231n:build_user_cs231n",
    "factory": "scratch.user_factory:build_user_factory",  # PATH:FUNCTION
}


def build(name: str, seed: int = 0, dtype="float64") -> HarnessModel:
    """The registered model ``name``, initialised from ``seed``, in ``dtype``."""
    if name in _USER_CODE:
        module, function = _USER_BUILDERS[_USER_CODE[name].api].split(":")
        build_user = getattr(importlib.import_module(module), function)
        return build_user(_USER_CODE[name], seed=seed, dtype=check_dtype(dtype))
    builders = {**_BUILDERS, **_INTERNAL}
    if name not in builders:
        raise ValueError(
            f"Invalid value for argument `name`. Expected one of {MODEL_NAMES}. "
            f"Received name={name!r}."
        )
    dtype = check_dtype(dtype)
    module, function = builders[name].split(":")
    model = getattr(importlib.import_module(module), function)(seed, dtype)
    model.name = name
    return model


def register_user_code(code) -> None:
    """Make ``build(code.name)`` build the user's code ``code`` (a
    ``scratch.user_code.UserCode``) in this process; a later registration replaces it."""
    if code.name in _BUILDERS or code.name in _INTERNAL:
        raise ValueError(
            f"Invalid value for argument `code`. Expected a name that is not a built-in "
            f"model. Received code.name={code.name!r}."
        )
    _USER_CODE[code.name] = code


def registered_user_code(name: str) -> bool:
    """Whether ``name`` is a user's code registered in this process."""
    return name in _USER_CODE


def build_two_conv(seed: int, dtype) -> HarnessModel:
    """Conv2D(8,3,same) -> ReLU -> MaxPool2D(2) -> Conv2D(16,3,same,s2) -> ReLU ->
    Flatten -> Dense(10) -> Softmax (``spec.networks.TWO_CONV``)."""
    from scratch.sequential import Sequential
    from spec.networks import TWO_CONV

    return Sequential.from_network(TWO_CONV, seed=seed, dtype=dtype)


def build_zhou_seq(seed: int, dtype) -> HarnessModel:
    """The blog network from the general layers: Conv2D(8,3,no bias) -> MaxPool2D(2) ->
    Flatten -> Dense(10) -> Softmax (its own glorot initialisation, not the blog's;
    ``spec.networks.ZHOU_SEQ``)."""
    from scratch.sequential import Sequential
    from spec.networks import ZHOU_SEQ

    return Sequential.from_network(ZHOU_SEQ, seed=seed, dtype=dtype)


def build_nhwc_odd(seed: int, dtype) -> HarnessModel:
    """``spec.networks.NHWC_ODD`` from the general NHWC layers."""
    from scratch.sequential import Sequential
    from spec.networks import NHWC_ODD

    return Sequential.from_network(NHWC_ODD, seed=seed, dtype=dtype)


def build_lenet5(seed: int, dtype) -> HarnessModel:
    """``spec.networks.LENET5`` (LeNet-5: tanh, average pooling, 32x32 by zero padding)
    from the general NHWC layers."""
    from scratch.sequential import Sequential
    from spec.networks import LENET5

    return Sequential.from_network(LENET5, seed=seed, dtype=dtype)


def build_cs231n_3layer(seed: int, dtype) -> HarnessModel:
    """``spec.networks.CS231N_3LAYER`` (conv - spatial batch norm - relu - pool - affine -
    batch norm - relu - dropout - affine - softmax) from the general NHWC layers; built in
    training mode."""
    from scratch.sequential import Sequential
    from spec.networks import CS231N_3LAYER

    return Sequential.from_network(CS231N_3LAYER, seed=seed, dtype=dtype)
