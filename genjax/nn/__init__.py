"""Layers shared by several families (Flax NNX modules, NHWC images)."""

from __future__ import annotations

from genjax.nn.layers import ACTIVATIONS
from genjax.nn.layers import DTYPES
from genjax.nn.layers import ConvDecoder
from genjax.nn.layers import ConvEncoder
from genjax.nn.layers import Downsample
from genjax.nn.layers import MLP
from genjax.nn.layers import ResBlock
from genjax.nn.layers import Upsample
from genjax.nn.layers import at_least_float32
from genjax.nn.layers import compute_dtype
from genjax.nn.layers import conv
from genjax.nn.layers import crop
from genjax.nn.layers import dropout
from genjax.nn.layers import downsampled_size
from genjax.nn.layers import get_activation
from genjax.nn.layers import kernel_init
from genjax.nn.layers import linear
from genjax.nn.layers import to_compute
from genjax.nn.layers import upsample_nearest

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "ConvDecoder",
    "ConvEncoder",
    "Downsample",
    "MLP",
    "ResBlock",
    "Upsample",
    "at_least_float32",
    "compute_dtype",
    "conv",
    "crop",
    "dropout",
    "downsampled_size",
    "get_activation",
    "kernel_init",
    "linear",
    "to_compute",
    "upsample_nearest",
]
