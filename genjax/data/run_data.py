"""The data of an experiment config, images and text alike.

`for_config` returns an `ImageData` (``config.data.name`` in
``genjax.data.DATASETS``) or a `TextData` (in ``genjax.data.text.DATASETS``): the
one object through which the launchers train, evaluate and inspect, so that they
are written once for every kind of data.

A text run keeps its tokenizer in its work directory (``tokenizer.json``): once a
run has started, sampling and evaluation decode with that copy, whatever happens to
the data cache, and the config's ``model.vocab_size`` is the tokenizer's.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from genjax.data import pipeline
from genjax.data import text
from genjax.data import tokenizers as tok_lib

TOKENIZER_FILE = "tokenizer.json"


def kind(name: str) -> str:
  """``"image"`` or ``"text"``.

  Raises:
    KeyError: naming every known dataset.
  """
  if name in pipeline.DATASETS:
    return "image"
  if name in text.DATASETS:
    return "text"
  raise KeyError(f"unknown dataset {name!r}; known datasets: "
                 f"{', '.join(pipeline.DATASETS + text.DATASETS)}. "
                 "Set config.data.name to one of them.")


def _data_kwargs(config) -> dict:
  return dict(data_dir=config.data.get("data_dir") or None,
              mnist_dir=config.data.get("mnist_dir") or None)


class ImageData:
  """Images: ``{"image": uint8[B, H, W, C], "label": int32[B]}`` batches."""

  kind = "image"

  def __init__(self, config):
    self.config = config
    if config.data.view not in pipeline.VIEWS:
      raise ValueError(f"unknown config.data.view {config.data.view!r}; choose one of "
                       f"{', '.join(pipeline.VIEWS)}")
    self.info = pipeline.info(config.data.name)

  def model_fields(self) -> dict[str, Any]:
    """Model fields that follow from the data: ``input_shape``."""
    return {"input_shape": tuple(self.info["input_shape"])}

  def num_examples(self, split: str) -> int:
    return self.info["splits"][split]

  def train_iterator(self, batch_size: int, seed: int):
    return pipeline.train_iterator(self.config.data.name, batch_size=batch_size,
                                   view=self.config.data.view, seed=seed,
                                   **_data_kwargs(self.config))

  def eval_batches(self, split: str, batch_size: int, seed: int):
    return pipeline.eval_batches(self.config.data.name, split, batch_size=batch_size,
                                 view=self.config.data.view, seed=seed,
                                 **_data_kwargs(self.config))

  def synthetic_batch(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    high = 2 if self.config.data.view == "binarized" else 256
    shape = tuple(self.info["input_shape"])
    return {"image": rng.integers(0, high, (batch_size, *shape), dtype=np.uint8),
            "label": rng.integers(0, self.info["num_classes"], (batch_size,),
                                  dtype=np.int32)}

  def save(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing to keep beside the config


class TextData:
  """Token windows of a text corpus: ``{"tokens": int32[B, block_size + 1]}``.

  Attributes:
    corpus: the prepared `genjax.data.text.Corpus`.
    tokenizer: the run's tokenizer (its work directory's copy when there is one).
  """

  kind = "text"

  def __init__(self, config, workdir: str | pathlib.Path | None = None):
    self.config = config
    self.corpus = text.prepare(config.data)
    saved = pathlib.Path(workdir) / TOKENIZER_FILE if workdir else None
    if saved is not None and saved.is_file():
      self.tokenizer = tok_lib.load(saved)
    else:
      self.tokenizer = text.tokenizer(config.data, self.corpus)
    self.block_size = int(config.model.get("block_size") or 0)
    if self.block_size < 1:
      raise ValueError("config.model.block_size must be set (an int >= 1) for text data")

  def model_fields(self) -> dict[str, Any]:
    """Model fields that follow from the data: ``vocab_size`` (the tokenizer's)."""
    return {"vocab_size": self.tokenizer.vocab_size}

  def num_examples(self, split: str) -> int:
    stream, _ = text.token_stream(self.corpus, split, self.tokenizer)
    return max(-(-(len(stream) - 1) // self.block_size), 1)

  def train_iterator(self, batch_size: int, seed: int):
    stream, _ = text.token_stream(self.corpus, "train", self.tokenizer)
    return text.train_iterator(stream, batch_size=batch_size, block_size=self.block_size,
                               seed=seed)

  def eval_batches(self, split: str, batch_size: int, seed: int = 0):
    del seed  # the windows are fixed
    stream, num_chars = text.token_stream(self.corpus, split, self.tokenizer)
    return text.eval_batches(stream, num_chars, self.tokenizer, batch_size=batch_size,
                             block_size=self.block_size)

  def synthetic_batch(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, self.tokenizer.vocab_size,
                                   (batch_size, self.block_size + 1), dtype=np.int32)}

  def save(self, workdir: pathlib.Path) -> None:
    """Keeps the tokenizer in the work directory (once; on process 0)."""
    path = pathlib.Path(workdir) / TOKENIZER_FILE
    if jax.process_index() == 0 and not path.is_file():
      tok_lib.save(self.tokenizer, path)


def for_config(config, workdir: str | pathlib.Path | None = None) -> ImageData | TextData:
  """The data of ``config``; a text run's tokenizer comes from ``workdir`` if saved.

  Raises:
    KeyError: an unknown ``config.data.name``.
  """
  return TextData(config, workdir) if kind(config.data.name) == "text" else ImageData(config)


def load_tokenizer(workdir: str | pathlib.Path) -> tok_lib.Tokenizer:
  """The tokenizer a text run in ``workdir`` was trained with.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  path = pathlib.Path(workdir) / TOKENIZER_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist: {workdir} holds no text run's "
                            "tokenizer (it is written when a text run starts)")
  return tok_lib.load(path)
