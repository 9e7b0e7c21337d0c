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

import functools
import pathlib
from typing import Any

import jax
import numpy as np

from genjax import fileio
from genjax.data import captions
from genjax.data import kinds
from genjax.data import pipeline
from genjax.data import text
from genjax.data import tokenizers as tok_lib

TOKENIZER_FILE = "tokenizer.json"


CAPTION_DATASETS = kinds.CAPTION_DATASETS
kind = kinds.kind


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

  def eval_batches(self, split: str, batch_size: int, seed: int, **shard):
    """This host's rows (``batch_size`` of them) of each global batch; ``shard``:
    ``shard_index`` and ``shard_count`` of `genjax.data.eval_batches`."""
    return pipeline.eval_batches(self.config.data.name, split, batch_size=batch_size,
                                 view=self.config.data.view, seed=seed,
                                 **_data_kwargs(self.config), **shard)

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


class CaptionData:
  """Captioned digit strips (`genjax.data.captions`) as token sequences for DALL-E:
  ``{"tokens": int32[B, 1 + L + N], "image": uint8[B, h, 3w, 1]}``.

  The image tokens come from the frozen tokenizer run in
  ``config.model.tokenizer_workdir``: every digit of the source split is encoded
  once (cached in that run's directory) and a strip's tokens are its digits'
  grids, slot by slot (blank slots: the tokens of a black image).
  """

  kind = "captions"

  def __init__(self, config, workdir: str | pathlib.Path | None = None):
    del workdir
    from genjax import rundir  # pylint: disable=g-import-not-at-top
    self.config = config
    directory = config.model.get("tokenizer_workdir") or ""
    self.source = config.data.get("source") or "mnist"
    self.pairs = tuple(tuple(p) for p in config.data.get("holdout_pairs", ((8, 3),)))
    if not directory:
      if "image_tokenizer" not in config:
        raise ValueError("config.model.tokenizer_workdir is empty: name the work directory "
                         "of a trained image tokenizer (experiments/configs/dvae.py), or "
                         "leave it empty in a config with an image_tokenizer block")
      # Not trained yet (the launcher's prepare_run trains it first): the config
      # validates and builds from the block; reading tokens needs the trained run.
      self.tokenizer_dir = None
      self.tokenizer_config = rundir.prepare_config(config.image_tokenizer)
      self._check_shape(self.tokenizer_config.model, "config.image_tokenizer")
      return
    self.tokenizer_dir = pathlib.Path(directory)
    self.tokenizer_config = rundir.load_config(self.tokenizer_dir)
    model = self.tokenizer_config.model
    if model.name != "dvae":
      raise ValueError(f"config.model.tokenizer_workdir={directory} holds a {model.name} "
                       "run, not an image tokenizer (dvae)")
    self._check_shape(model, f"the image tokenizer in {directory}")
    if not any((self.tokenizer_dir / "checkpoints").glob("[0-9]*")):
      raise FileNotFoundError(f"the image tokenizer run {directory} has no checkpoint: "
                              "train it first (python -m experiments.main --config="
                              f"experiments/configs/dvae.py:... --workdir={directory})")

  def _check_shape(self, model, where: str) -> None:
    want = tuple(pipeline.info(self.source)["input_shape"])
    if tuple(model.input_shape) != want:
      raise ValueError(f"{where} is for {tuple(model.input_shape)} images, but "
                       f"config.data.source={self.source!r} has {want}: use one for "
                       f"{self.source}")

  def model_fields(self) -> dict[str, Any]:
    """The tokenizer's model block (DALL-E builds its frozen copy from it)."""
    return {"tokenizer": self.tokenizer_config.model.to_dict()}

  def _digit_tokens(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Token grids of every digit of the split and of a blank slot (cached)."""
    if self.tokenizer_dir is None:
      raise ValueError("config.model.tokenizer_workdir is empty: the image tokenizer is "
                       "not trained yet; experiments.main trains it first, or name a "
                       "trained dvae run's work directory")
    return _digit_tokens(str(self.tokenizer_dir), self.source, split,
                         self.config.data.get("data_dir") or None,
                         self.config.data.get("mnist_dir") or None)

  def _to_tokens(self, batch, split):
    from genjax.models import dalle  # pylint: disable=g-import-not-at-top
    grids, blank = self._digit_tokens(split)
    idx = batch["index"]
    slot_tokens = np.where((idx >= 0)[..., None, None], grids[np.maximum(idx, 0)], blank)
    image = slot_tokens.reshape(len(idx), -1) + dalle.TEXT_VOCAB
    bos = np.full((len(idx), 1), dalle.BOS, np.int32)
    tokens = np.concatenate([bos, batch["caption"], image], axis=1).astype(np.int32)
    return {"tokens": tokens, "image": batch["image"], "digits": batch["digits"],
            "negative_caption": batch["negative_caption"].astype(np.int32)}

  def _batches(self, split, batch_size, seed, size=None):
    return captions.batches(self.source, split, batch_size=batch_size, seed=seed,
                            pairs=self.pairs, size=size, **_data_kwargs(self.config))

  def num_examples(self, split: str) -> int:
    return int(self.config.data.get(f"num_{split}", 1000))

  def train_iterator(self, batch_size: int, seed: int):
    self._digit_tokens("train")  # now, not inside the first steps
    it = self._batches("train", batch_size, seed)
    return _MappedIterator(it, lambda b: self._to_tokens(b, "train"))

  def eval_batches(self, split: str, batch_size: int, seed: int = 0):
    self._digit_tokens(split)
    ds = self._batches(split, batch_size, seed, size=self.num_examples(split))
    return ds.map(lambda b: self._to_tokens(b, split))

  def synthetic_batch(self, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    from genjax.models import dalle  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(seed)
    h, w, c = self.tokenizer_config.model.input_shape
    grid = [-(-s // 4) for s in (h, w)]
    n = captions.MAX_DIGITS * grid[0] * grid[1]
    text = rng.integers(0, dalle.TEXT_VOCAB, (batch_size, 1 + captions.max_caption_length()))
    k = self.tokenizer_config.model.get("codebook_size") or 512
    image = rng.integers(0, k, (batch_size, n)) + dalle.TEXT_VOCAB
    return {"tokens": np.concatenate([text, image], 1).astype(np.int32),
            "image": rng.integers(0, 256, (batch_size, h, captions.MAX_DIGITS * w, c),
                                  dtype=np.uint8),
            "negative_caption": text[:, 1:].astype(np.int32)}

  def save(self, workdir: pathlib.Path) -> None:
    del workdir  # the tokenizer run is referenced by config.model.tokenizer_workdir


class _MappedIterator:
  """A checkpointable iterator with a function applied to each element."""

  def __init__(self, it, fn):
    self._it, self._fn = it, fn

  def __iter__(self):
    return self

  def __next__(self):
    return self._fn(next(self._it))

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


@functools.lru_cache(maxsize=4)
def _digit_tokens(tokenizer_dir: str, source: str, split: str, data_dir, mnist_dir):
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  from genjax.models import dvae  # pylint: disable=g-import-not-at-top
  _, model, _, step = experiment.restore_model(tokenizer_dir)
  path = pathlib.Path(tokenizer_dir) / f"digit_tokens_{source}_{split}_{step}.npz"
  if path.is_file():
    cached = np.load(path)
    return cached["grids"], cached["blank"]
  images = pipeline.load_arrays(source, "train" if split == "train" else "test",
                                data_dir=data_dir, mnist_dir=mnist_dir)["image"]
  chunk = 1000
  grids = np.concatenate([np.asarray(dvae.encode(model, _pad_rows(images[i:i + chunk], chunk)))
                          [:len(images[i:i + chunk])] for i in range(0, len(images), chunk)])
  blank = np.asarray(dvae.encode(model, np.zeros((1, *images.shape[1:]), np.uint8)))[0]
  if jax.process_index() == 0:
    fileio.write_atomically(path, lambda tmp: np.savez(tmp, grids=grids, blank=blank))
  return grids, blank


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
  """Pads the first axis to ``n`` rows (one compiled shape for every chunk)."""
  return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)]) if len(x) < n else x


def for_config(config, workdir: str | pathlib.Path | None = None
               ) -> ImageData | TextData | CaptionData:
  """The data of ``config``; a text run's tokenizer comes from ``workdir`` if saved.

  Raises:
    KeyError: an unknown ``config.data.name``.
  """
  k = kind(config.data.name)
  if k == "text":
    return TextData(config, workdir)
  if k == "captions":
    return CaptionData(config, workdir)
  return ImageData(config)


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
