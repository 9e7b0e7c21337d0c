"""Captioned digit strips for text-to-image models (DALL-E): generated from MNIST or
scikit-learn's 8x8 digits, deterministically from a seed.

A strip holds 1 to 3 digits side by side, left-aligned in ``3`` slots (28 x 84 for
MNIST, blank slots black), captioned in words: a single digit in one of several
phrasings ("a handwritten seven", "the digit 7", "seven", ...), several digits
as "three one four" or "the digits 3 1 4". Training strips use the training split's
images, test strips the test split's. **Held-out combinations**: strips in which
a held-out pair of digits stands side by side (``holdout_pairs``, default 8 then 3)
never appear in training; the ``heldout`` split is made of them, to measure
generalisation to unseen combinations.

Example ``i`` of a split is a function of ``(seed, split, i)`` only: training draws
are an infinite stream restored exactly from the grain iterator state, the test
sets fixed lists.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Sequence

import grain
import jax
import numpy as np

from genjax.data import pipeline

SOURCES = ("mnist", "digits")
SPLITS = ("train", "test", "heldout")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SINGLE_PHRASES = ("a handwritten {w}", "the digit {d}", "{w}", "the number {w}", "a {w}")
STRIP_PHRASES = ("{words}", "the digits {digits}")
ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789"
MAX_DIGITS = 3


def caption(digits: Sequence[int], phrase: int) -> str:
  """The caption of a strip of ``digits`` in phrasing ``phrase`` (any int; taken modulo
  the number of phrasings for that many digits)."""
  if len(digits) == 1:
    template = SINGLE_PHRASES[phrase % len(SINGLE_PHRASES)]
    return template.format(w=WORDS[digits[0]], d=digits[0])
  template = STRIP_PHRASES[phrase % len(STRIP_PHRASES)]
  return template.format(words=" ".join(WORDS[d] for d in digits),
                         digits=" ".join(str(d) for d in digits))


def max_caption_length() -> int:
  """The longest caption any strip can get (characters)."""
  longest = max(WORDS, key=len)
  single = max(len(p.format(w=longest, d=0)) for p in SINGLE_PHRASES)
  strip = max(len(caption([WORDS.index(longest)] * MAX_DIGITS, p))
              for p in range(len(STRIP_PHRASES)))
  return max(single, strip)


def read_digits(digits: Sequence[int], caption_text: str) -> list[int] | None:
  """The digits a caption asks for (inverse of `caption`), or None if it names none."""
  words = caption_text.replace("a handwritten ", "").replace("the digits ", "").replace(
      "the digit ", "").replace("the number ", "").split()
  if words and words[0] == "a":
    words = words[1:]
  out = []
  for w in words:
    if w in WORDS:
      out.append(WORDS.index(w))
    elif w.isdigit() and len(w) == 1:
      out.append(int(w))
    else:
      return None
  del digits
  return out or None


def contains_pair(digits: Sequence[int], pairs) -> bool:
  """Whether two neighbouring digits of the strip form a held-out pair."""
  return any((a, b) in pairs for a, b in zip(digits[:-1], digits[1:]))


def _rng(*keys: int) -> np.random.Generator:
  return np.random.default_rng([int(k) for k in keys])


def draw_strip(rng: np.random.Generator, pairs, *, heldout: bool) -> tuple[list[int], int]:
  """Digits (1 to 3) and a phrasing; ``heldout`` strips contain a held-out pair,
  others never do."""
  while True:
    if heldout:
      a, b = pairs[rng.integers(len(pairs))]
      extra = list(rng.integers(0, 10, rng.integers(0, MAX_DIGITS - 1)))
      digits = [a, b] + extra if rng.integers(2) == 0 else extra + [a, b]
      digits = [int(d) for d in digits][:MAX_DIGITS]
    else:
      digits = [int(d) for d in rng.integers(0, 10, rng.integers(1, MAX_DIGITS + 1))]
    if contains_pair(digits, pairs) == heldout:
      return digits, int(rng.integers(0, 1 << 30))


def near_miss(rng: np.random.Generator, digits: Sequence[int], pairs) -> list[int]:
  """Digits one edit away from ``digits`` (a digit changed, two neighbours swapped,
  one digit dropped or inserted), never with a held-out pair: the hard negative
  captions of DALL-E's CLIP-style scorer."""
  digits = [int(d) for d in digits]
  while True:
    out, kind = list(digits), int(rng.integers(4))
    i = int(rng.integers(len(out)))
    j = max(min(i, len(out) - 2), 0)  # the left one of two neighbours
    if kind == 1 and len(out) > 1 and out[j] != out[j + 1]:
      out[j], out[j + 1] = out[j + 1], out[j]
    elif kind == 2 and len(out) > 1:
      del out[i]
    elif kind == 3 and len(out) < MAX_DIGITS:
      out.insert(int(rng.integers(len(out) + 1)), int(rng.integers(10)))
    else:
      out[i] = (out[i] + int(rng.integers(1, 10))) % 10
    if out != digits and not contains_pair(out, pairs):
      return out


class CaptionSet:
  """Images of one source split grouped by label, and the strips made from them.

  Attributes:
    image: ``uint8[N, h, w, 1]`` digits of the split.
    by_label: indices of each label's images.
  """

  def __init__(self, source: str, split: str, *, data_dir=None, mnist_dir=None):
    if source not in SOURCES:
      raise ValueError(f"unknown config.data.source {source!r}; choose one of "
                       f"{', '.join(SOURCES)}")
    arrays = pipeline.load_arrays(source, "train" if split == "train" else "test",
                                  data_dir=data_dir, mnist_dir=mnist_dir)
    self.image, label = arrays["image"], arrays["label"]
    self.by_label = [np.flatnonzero(label == d) for d in range(10)]

  def compose(self, rng: np.random.Generator, digits: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A strip ``uint8[h, 3w, 1]`` of random images of ``digits`` and their indices
    (``-1`` for blank slots)."""
    h, w, c = self.image.shape[1:]
    strip = np.zeros((h, MAX_DIGITS * w, c), np.uint8)
    idx = np.full((MAX_DIGITS,), -1, np.int64)
    for slot, d in enumerate(digits):
      pool = self.by_label[d]
      idx[slot] = pool[rng.integers(len(pool))]
      strip[:, slot * w:(slot + 1) * w] = self.image[idx[slot]]
    return strip, idx


def _encode_caption(text: str, length: int) -> np.ndarray:
  lookup = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
  ids = np.zeros((length,), np.int32)  # 0 pads
  ids[:len(text)] = [lookup[ch] for ch in text]
  return ids


def decode_caption(ids) -> str:
  """Caption ids back to text (0 is padding)."""
  return "".join(ALPHABET[i - 1] for i in np.asarray(ids) if 0 < i <= len(ALPHABET))


def encode_caption(text: str, length: int | None = None) -> np.ndarray:
  """A caption as ``int32[length]`` character ids (1..37, 0 pads).

  Raises:
    ValueError: a character outside lowercase letters, digits and space, or a
      caption longer than ``length``.
  """
  text = text.strip().lower()
  bad = sorted(set(text) - set(ALPHABET))
  if bad:
    raise ValueError(f"caption {text!r} has characters {''.join(bad)!r}; captions use "
                     "lowercase letters, digits and spaces")
  length = max_caption_length() if length is None else length
  if len(text) > length:
    raise ValueError(f"caption {text!r} has {len(text)} characters, more than {length}")
  return _encode_caption(text, length)


VOCAB_SIZE = len(ALPHABET) + 1  # with the padding id 0


class _Examples:
  """Example ``i`` of a split: a strip, its caption and its digits."""

  def __init__(self, images: CaptionSet, split: str, seed: int, pairs, length: int,
               batch_size: int, size: int | None):
    self._images, self._split, self._seed = images, split, seed
    self._pairs, self._length, self._batch_size, self._size = pairs, length, batch_size, size

  def __len__(self):
    return sys.maxsize if self._size is None else -(-self._size // self._batch_size)

  def example(self, i: int) -> dict[str, Any]:
    rng = _rng(self._seed, SPLITS.index(self._split), i)
    digits, phrase = draw_strip(rng, self._pairs, heldout=self._split == "heldout")
    strip, idx = self._images.compose(rng, digits)
    text = caption(digits, phrase)
    padded = np.full((MAX_DIGITS,), -1, np.int32)
    padded[:len(digits)] = digits
    negative = caption(near_miss(rng, digits, self._pairs), phrase)
    return {"image": strip, "caption": _encode_caption(text, self._length),
            "negative_caption": _encode_caption(negative, self._length),
            "digits": padded, "index": idx}

  def __getitem__(self, j: int) -> dict[str, np.ndarray]:
    stop = j * self._batch_size + self._batch_size
    if self._size is not None:
      stop = min(stop, self._size)
    rows = [self.example(i) for i in range(j * self._batch_size, stop)]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


@functools.lru_cache(maxsize=4)
def _caption_set(source, split, data_dir, mnist_dir) -> CaptionSet:
  return CaptionSet(source, split, data_dir=data_dir, mnist_dir=mnist_dir)


def batches(source: str, split: str, *, batch_size: int, seed: int, pairs=((8, 3),),
            size: int | None = None, data_dir=None, mnist_dir=None, prefetch: int = 4):
  """Batches of strips: ``{"image": uint8[B, h, 3w, 1], "caption": int32[B, L],
  "negative_caption": int32[B, L], "digits": int32[B, 3] (-1: blank),
  "index": int64[B, 3]}``; the negative caption names digits one edit away
  (`near_miss`), in the same phrasing.

  Args:
    source: ``"mnist"`` or ``"digits"``.
    split: ``"train"`` (an infinite stream, as a checkpointable grain iterator),
      ``"test"`` or ``"heldout"`` (``size`` examples, a finite grain dataset).
    batch_size: strips per batch.
    seed: the strips are a function of ``(seed, split, index)``.
    pairs: held-out pairs of neighbouring digits.
    size: examples of a finite split.
    data_dir, mnist_dir: where the source data live (see `genjax.data.source`).
    prefetch: training batches prepared ahead.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
  pairs = tuple(tuple(int(d) for d in p) for p in pairs)
  images = _caption_set(source, "train" if split == "train" else "test",
                        os.fspath(data_dir) if data_dir else None,
                        os.fspath(mnist_dir) if mnist_dir else None)
  shard = jax.process_index() if split == "train" else 0
  examples = _Examples(images, split, seed + 1_000_003 * shard, pairs,
                       max_caption_length(), batch_size, None if split == "train" else size)
  ds = grain.MapDataset.source(examples)
  if split == "train":
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1 if prefetch else 0,
                                                      prefetch_buffer_size=max(prefetch, 1))))
  return ds
