import numpy as np
import pytest

from scratch.layers import Conv2D, Dense, ReLU
from scratch.pooling import MaxPool2D

CONSTRUCTOR_ERRORS = [
    (lambda: Conv2D(0, 3), "Invalid value for argument `filters`. Expected a strictly "
     "positive integer. Received filters=0."),
    (lambda: Conv2D(2.5, 3), "Invalid value for argument `filters`. Expected a strictly "
     "positive integer. Received filters=2.5."),
    (lambda: Conv2D(True, 3), "Invalid value for argument `filters`. Expected a strictly "
     "positive integer. Received filters=True."),
    (lambda: Conv2D(8, (3,)), "Invalid value for argument `kernel_size`. Expected a strictly "
     "positive integer or a tuple of 2 of them. Received kernel_size=(3,)."),
    (lambda: Conv2D(8, 3, strides=0), "Invalid value for argument `strides`. Expected a "
     "strictly positive integer or a tuple of 2 of them. Received strides=0."),
    (lambda: Conv2D(8, 3, padding="full"), "Invalid value for argument `padding`. Expected "
     "one of ('valid', 'same'). Received padding='full'."),
    (lambda: Conv2D(8, 3, use_bias="yes"), "Invalid value for argument `use_bias`. Expected "
     "a bool. Received use_bias='yes'."),
    (lambda: MaxPool2D(padding="same"), "Invalid value for argument `padding`. Expected one "
     "of ('valid',). Received padding='same'."),
    (lambda: MaxPool2D(2, strides=(1, 0)), "Invalid value for argument `strides`. Expected a "
     "strictly positive integer or a tuple of 2 of them. Received strides=(1, 0)."),
    (lambda: Dense(-1), "Invalid value for argument `units`. Expected a strictly positive "
     "integer. Received units=-1."),
    (lambda: ReLU(name=""), "Invalid value for argument `name`. Expected a non-empty string "
     "or None. Received name=''."),
]  # fmt: skip


@pytest.mark.parametrize(
    "make, message",
    CONSTRUCTOR_ERRORS,
    ids=["filters_zero", "filters_float", "filters_bool", "kernel_size_short", "strides_zero",
         "padding_conv", "use_bias_str", "padding_pool", "pool_strides_zero", "units_negative",
         "name_empty"],
)  # fmt: skip
def test_constructor_errors_name_the_argument_rule_and_value(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert str(error.value) == message


def built_conv():
    layer = Conv2D(2, 3, name="conv2d")
    layer.build((5, 5, 3), np.random.default_rng(0), "float64")
    return layer


FORWARD_ERRORS = [
    (np.zeros((5, 5, 3)), "Input 0 of layer `conv2d` is incompatible with the layer: expected "
     "ndim=4, found ndim=3. Full shape received: (5, 5, 3)"),
    (np.zeros((1, 5, 5, 1)), "Input 0 of layer `conv2d` is incompatible with the layer: "
     "expected axis -1 of input shape to have value 3, but received input with shape "
     "(1, 5, 5, 1)"),
    (np.full((1, 5, 5, 3), np.inf), "Invalid input to layer `conv2d`. Expected finite values. "
     "Received 75 non-finite value(s), the first at index (0, 0, 0, 0): np.float64(inf)."),
]  # fmt: skip


@pytest.mark.parametrize("x, message", FORWARD_ERRORS, ids=["rank", "channels", "non_finite"])
def test_forward_errors_name_the_rule_and_what_was_received(x, message):
    with pytest.raises(ValueError) as error:
        built_conv().forward(x)
    assert str(error.value) == message


def test_kernel_larger_than_the_input_is_rejected_but_same_padding_allows_it():
    with pytest.raises(ValueError) as error:
        Conv2D(2, (3, 6)).build((5, 5, 1), None, "float64")
    assert str(error.value) == (
        "Invalid value for argument `kernel_size`. Expected a kernel no larger than the "
        "padded input (5, 5) (padding='valid', layer `conv2d`). Received kernel_size=(3, 6)."
    )
    assert Conv2D(2, 6, padding="same").build((5, 5, 1), None, "float64") == (5, 5, 2)


def test_pool_window_larger_than_the_input_is_rejected():
    with pytest.raises(ValueError) as error:
        MaxPool2D(3, name="max_pooling2d").build((2, 8, 1), None, "float64")
    assert str(error.value) == (
        "Invalid value for argument `pool_size`. Expected a window no larger than the input "
        "(2, 8) (layer `max_pooling2d`). Received pool_size=(3, 3)."
    )


def test_backward_before_forward_and_wrong_dout_shape_are_rejected():
    layer = built_conv()
    with pytest.raises(RuntimeError, match="Layer `conv2d`: backward called before forward."):
        layer.backward(np.zeros((1, 3, 3, 2)))
    layer.forward(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError) as error:
        layer.backward(np.zeros((1, 3, 3, 3)))
    assert str(error.value) == (
        "Invalid value for argument `dout` of layer `conv2d`. Expected shape (1, 3, 3, 2) "
        "(the last output's). Received dout with shape (1, 3, 3, 3)."
    )
