"""MaxPool2 with the blog's own backprop rule: a window's gradient is copied to EVERY
element equal to its maximum. Most 2x2 windows of MNIST's background tie, so this
over-counts (TensorFlow sends it to the first maximum only): a known bug, kept here for
the harness to catch."""

import numpy as np


class MaxPool2:
    def windows(self, volume):
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
            peak = np.amax(window, axis=(0, 1))
            is_max = window == peak  # every tied maximum, the blog's rule
            d_L_d_input[2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = is_max * d_L_d_out[i, j]
        return d_L_d_input
