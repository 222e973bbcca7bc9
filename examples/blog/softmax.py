"""A fully connected layer with softmax, in the style of Victor Zhou's CNN blog post.

Written for the ``parity check`` example: the blog's API, our own code.
"""

import numpy as np


class Softmax:
    """Flatten, ``totals = input @ weights + biases``, then softmax over ``nodes`` classes."""

    def __init__(self, input_len, nodes):
        # Divided by input_len so that the first totals stay small.
        self.weights = np.random.randn(input_len, nodes) / input_len  # noqa: NPY002 (the blog's)
        self.biases = np.zeros(nodes)

    def forward(self, volume):
        self.last_input_shape = volume.shape
        flat = volume.flatten()
        self.last_input = flat
        totals = flat @ self.weights + self.biases
        self.last_totals = totals
        # The blog takes np.exp(totals): it overflows once a total passes 709.78 (float64),
        # 88.72 (float32). Softmax is shift-invariant: subtracting the maximum changes nothing
        # else and keeps every exponent <= 0 (parity checks it at its large-logits state).
        exps = np.exp(totals - totals.max())
        return exps / np.sum(exps)

    def backprop(self, d_L_d_out, learn_rate):
        """SGD step on weights and biases; returns the gradient of the input (its shape).

        The input gradient is taken with the weights BEFORE the step.
        """
        exps = np.exp(self.last_totals - self.last_totals.max())  # shifted, as in forward
        probs = exps / np.sum(exps)
        d_L_d_totals = np.zeros_like(probs)
        for k in np.flatnonzero(d_L_d_out):
            # Row k of the softmax Jacobian: d p_k / d t = p_k * (e_k - p).
            row = -probs[k] * probs
            row[k] += probs[k]
            d_L_d_totals += d_L_d_out[k] * row
        d_L_d_weights = np.outer(self.last_input, d_L_d_totals)
        d_L_d_input = self.weights @ d_L_d_totals
        self.weights -= learn_rate * d_L_d_weights
        self.biases -= learn_rate * d_L_d_totals
        return d_L_d_input.reshape(self.last_input_shape)
