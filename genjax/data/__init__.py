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

import importlib

# name -> the submodule that defines it. Imported on first use (PEP 562), so that
# `genjax.data.kinds` loads without TFDS, grain or JAX.
_EXPORTS = {
    "Digits": "builders", "IdxFormatError": "builders", "Mnist": "builders",
    "read_idx": "builders",
    "DATASETS": "pipeline", "VIEWS": "pipeline", "data_dir": "pipeline",
    "dequantize": "pipeline", "eval_batches": "pipeline", "info": "pipeline",
    "load_arrays": "pipeline", "source": "pipeline", "train_iterator": "pipeline",
}
_SUBMODULES = ("builders", "captions", "kinds", "pipeline", "run_data", "text",
               "tokenizers", "benchmark")


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"genjax.data.{_EXPORTS[name]}"), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"genjax.data.{name}")
  raise AttributeError(f"module 'genjax.data' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_EXPORTS, *_SUBMODULES])


__all__ = sorted([*_EXPORTS, "run_data", "text", "tokenizers"])
