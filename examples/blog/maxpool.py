"""2x2 max pooling in the style of Victor Zhou's CNN blog post (loops over windows).

Written for the ``parity check`` example: the blog's API, our own code. One change from
the blog on purpose: ``backprop`` sends a window's gradient to its FIRST maximum only
(row-major, TensorFlow's rule). The blog copies it to every element equal to the maximum,
and most 2x2 windows of MNIST's black background tie.
"""

import numpy as np


class MaxPool2:
    """Max of each 2x2 window, stride 2: ``(h, w, f)`` -> ``(h // 2, w // 2, f)``."""

    def windows(self, volume):
        """Every 2x2 window of ``volume`` (all channels) with its output position."""
        rows, cols, _ = volume.shape
        for i in range(rows // 2):
            for j in range(cols // 2):
                yield i, j, volume[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]

    def forward(self, volume):
        self.last_input = volume
        rows, cols, channels = volume.shape
        out = np.zeros((rows // 2, cols // 2, channels), dtype=volume.dtype)
        for i, j, window in self.windows(volume):
            out[i, j] = window.reshape(4, channels).max(axis=0)
        return out

    def backprop(self, d_L_d_out):
        d_L_d_input = np.zeros(self.last_input.shape, dtype=d_L_d_out.dtype)
        for i, j, window in self.windows(self.last_input):
            channels = window.shape[2]
            # argmax over the 4 cells (row-major) returns the first maximum of each channel.
            first = np.argmax(window.reshape(4, channels), axis=0)
            d_L_d_input[2 * i + first // 2, 2 * j + first % 2, np.arange(channels)] = d_L_d_out[
                i, j
            ]
        return d_L_d_input
