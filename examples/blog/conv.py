"""A 3x3 convolution layer in the style of Victor Zhou's CNN blog post (loops over regions).

Written for the ``parity check`` example: the blog's API, our own code.
"""

import numpy as np


class Conv3x3:
    """``num_filters`` 3x3 filters, stride 1, no padding, no bias, one grayscale image.

    ``forward(image)`` takes ``(h, w)`` and returns ``(h - 2, w - 2, num_filters)``.
    """

    def __init__(self, num_filters):
        self.num_filters = num_filters
        # Standard normal divided by 9 keeps the first outputs small.
        self.filters = np.random.randn(num_filters, 3, 3) / 9  # noqa: NPY002 (the blog's init)

    def patches(self, image):
        """Every 3x3 patch of ``image`` with the output position it feeds."""
        rows, cols = image.shape
        for top in range(rows - 2):
            for left in range(cols - 2):
                yield top, left, image[top : top + 3, left : left + 3]

    def forward(self, image):
        self.last_input = image
        rows, cols = image.shape
        dtype = np.result_type(image, self.filters)
        out = np.zeros((rows - 2, cols - 2, self.num_filters), dtype=dtype)
        kernels = self.filters.reshape(self.num_filters, 9)  # one row per filter
        for top, left, patch in self.patches(image):
            # One output value per filter: the patch times the filter, summed.
            out[top, left] = kernels @ patch.reshape(9)
        return out

    def backprop(self, d_L_d_out, learn_rate):
        """SGD step on the filters. Returns None: this is the first layer, nothing
        upstream needs the gradient of the image."""
        d_L_d_filters = np.zeros_like(self.filters)
        for top, left, patch in self.patches(self.last_input):
            # Every filter saw this patch; its output gradient scales the patch.
            d_L_d_filters += d_L_d_out[top, left][:, None, None] * patch
        self.filters -= learn_rate * d_L_d_filters
        return None
