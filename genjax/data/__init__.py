"""Data sets as TFDS builders read through ``tfds`` data sources and ``grain``.

Offline image data sets (``DATASETS``): scikit-learn's 8x8 ``digits`` and
``mnist`` (a directory of IDX files, or a download). They are prepared once as
``array_record`` files under ``data_dir()`` and read back without TensorFlow.
Batches are ``{"image": uint8[B, H, W, C], "label": int32[B]}`` numpy arrays.

Text corpora (``text.DATASETS``: a directory of ``.txt`` files, or the generated
``counting``) are in `genjax.data.text`, their tokenizers in
`genjax.data.tokenizers`; `genjax.data.run_data.for_config` gives the data of any
experiment config.
"""

from __future__ import annotations

from genjax.data.builders import Digits
from genjax.data.builders import IdxFormatError
from genjax.data.builders import Mnist
from genjax.data.builders import read_idx
from genjax.data.pipeline import DATASETS
from genjax.data.pipeline import VIEWS
from genjax.data.pipeline import data_dir
from genjax.data.pipeline import dequantize
from genjax.data.pipeline import eval_batches
from genjax.data.pipeline import info
from genjax.data.pipeline import load_arrays
from genjax.data.pipeline import source
from genjax.data.pipeline import train_iterator
from genjax.data import run_data
from genjax.data import text
from genjax.data import tokenizers

__all__ = [
    "DATASETS",
    "VIEWS",
    "Digits",
    "IdxFormatError",
    "Mnist",
    "data_dir",
    "dequantize",
    "eval_batches",
    "info",
    "load_arrays",
    "read_idx",
    "run_data",
    "source",
    "text",
    "tokenizers",
    "train_iterator",
]
