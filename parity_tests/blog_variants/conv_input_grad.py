"""Conv3x3 whose backprop also returns the gradient of its image (the blog's exercise).

Overlapping 3x3 windows share pixels, so each window's contribution must be ADDED
(the line marked ``# accumulate``); writing it with ``=`` keeps only the last window's."""

import numpy as np


class Conv3x3:
    def __init__(self, num_filters):
        self.num_filters = num_filters
        self.filters = np.random.randn(num_filters, 3, 3) / 9  # noqa: NPY002 (the blog's init)

    def patches(self, image):
        rows, cols = image.shape
        for top in range(rows - 2):
            for left in range(cols - 2):
                yield top, left, image[top : top + 3, left : left + 3]

    def forward(self, image):
        self.last_input = image
        rows, cols = image.shape
        out = np.zeros((rows - 2, cols - 2, self.num_filters), dtype=image.dtype)
        kernels = self.filters.reshape(self.num_filters, 9)
        for top, left, patch in self.patches(image):
            out[top, left] = kernels @ patch.reshape(9)
        return out

    def backprop(self, d_L_d_out, learn_rate):
        d_L_d_filters = np.zeros_like(self.filters)
        d_L_d_image = np.zeros_like(self.last_input)
        for top, left, patch in self.patches(self.last_input):
            d_L_d_filters += d_L_d_out[top, left][:, None, None] * patch
            # Each pixel of the window gets the filters weighted by the output gradients.
            contribution = np.tensordot(d_L_d_out[top, left], self.filters, axes=1)
            d_L_d_image[top : top + 3, left : left + 3] += contribution  # accumulate
        self.filters -= learn_rate * d_L_d_filters
        return d_L_d_image
