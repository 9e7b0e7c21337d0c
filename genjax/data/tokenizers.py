"""Tokenizers of text corpora: character level and byte-level BPE.

Both are trained on a corpus's training documents only, map text to ``int32``
ids and back, and are saved as one JSON file (``tokenizer.json`` in a run's work
directory), so that sampling and evaluation decode exactly what training encoded.

* `CharTokenizer`: one id per character seen in training, sorted, after id 0, the
  unknown character (``<unk>``), which decodes to U+FFFD.
* `BpeTokenizer`: byte-level BPE (Radford et al. 2019) trained with Hugging Face
  ``tokenizers``; every string round-trips exactly, whatever its characters.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np

from genjax import fileio

KINDS = ("char", "bpe")
UNK = "\ufffd"  # what the unknown-character id decodes to


class CharTokenizer:
  """Characters to ids: ``<unk>`` is 0, the training characters 1.. in sorted order.

  Attributes:
    chars: the training split's distinct characters, sorted.
    vocab_size: ``len(chars) + 1``.
  """

  kind = "char"

  def __init__(self, chars: str):
    self.chars = "".join(sorted(set(chars)))
    self.vocab_size = len(self.chars) + 1
    self._lookup = np.zeros(max(map(ord, self.chars), default=0) + 1, np.int32)
    self._lookup[[ord(c) for c in self.chars]] = np.arange(1, self.vocab_size)
    self._table = np.array([UNK, *self.chars], dtype=object)

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> "CharTokenizer":
    """The characters of ``texts`` (``vocab_size`` is ignored: it follows from them)."""
    del vocab_size
    chars: set[str] = set()
    for t in texts:
      chars.update(t)
    return cls("".join(chars))

  def encode(self, text: str) -> np.ndarray:
    """``int32[len(text)]`` ids; characters not seen in training become 0 (``<unk>``)."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32).astype(np.int64)
    inside = codes < len(self._lookup)
    return np.where(inside, self._lookup[np.minimum(codes, len(self._lookup) - 1)],
                    0).astype(np.int32)

  def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    ids = np.asarray(ids, np.int64)
    ids = np.where((ids >= 0) & (ids < self.vocab_size), ids, 0)
    return "".join(self._table[ids])

  def to_json(self) -> dict:
    return {"kind": self.kind, "chars": self.chars}


class BpeTokenizer:
  """Byte-level BPE from Hugging Face ``tokenizers``; lossless on any text.

  Attributes:
    vocab_size: the number of ids (256 bytes plus the learned merges).
  """

  kind = "bpe"

  def __init__(self, hf_tokenizer):
    self._tok = hf_tokenizer
    self.vocab_size = hf_tokenizer.get_vocab_size()

  @classmethod
  def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> "BpeTokenizer":
    """Learns ``vocab_size - 256`` merges on ``texts`` (deterministic).

    References:
      Sennrich, Haddow & Birch, "Neural Machine Translation of Rare Words with
      Subword Units", ACL 2016; Radford et al., "Language Models are
      Unsupervised Multitask Learners", 2019 (byte-level BPE).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
    vocab_size = int(vocab_size or 1024)
    if vocab_size <= 256:
      raise ValueError(f"config.data.vocab_size={vocab_size}: byte-level BPE needs more "
                       "than the 256 byte tokens; use e.g. 1024")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(list(texts), trainer=trainer)
    return cls(tok)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._tok.encode(text).ids, np.int32)

  def encode_many(self, texts: Sequence[str]) -> list[np.ndarray]:
    """`encode` of each text, in parallel threads."""
    return [np.asarray(e.ids, np.int32) for e in self._tok.encode_batch(list(texts))]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

  def to_json(self) -> dict:
    return {"kind": self.kind, "hf": json.loads(self._tok.to_str())}


Tokenizer = CharTokenizer | BpeTokenizer


def train(kind: str, texts: Iterable[str], vocab_size: int | None = None) -> Tokenizer:
  """A tokenizer of ``kind`` (``"char"`` or ``"bpe"``) trained on ``texts``."""
  if kind not in KINDS:
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)} "
                     "(config.data.tokenizer)")
  return (CharTokenizer if kind == "char" else BpeTokenizer).train(texts, vocab_size)


def save(tokenizer: Tokenizer, path: str | os.PathLike[str]) -> pathlib.Path:
  """Writes ``tokenizer`` as JSON to ``path`` (atomically: a temp file, then rename)."""
  text = json.dumps(tokenizer.to_json()) + "\n"
  return fileio.write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load(path: str | os.PathLike[str]) -> Tokenizer:
  """Reads a tokenizer written by `save`.

  Raises:
    FileNotFoundError: naming the file.
    ValueError: when the file is not a genjax tokenizer.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no tokenizer at {path}")
  try:
    spec = json.loads(path.read_text(encoding="utf-8"))
    return from_json(spec)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not a genjax tokenizer file ({e})") from e


def from_json(spec: dict) -> Tokenizer:
  """The tokenizer of a ``to_json()`` dict."""
  kind = spec["kind"]
  if kind == "char":
    return CharTokenizer(spec["chars"])
  if kind == "bpe":
    from tokenizers import Tokenizer as HfTokenizer  # pylint: disable=g-import-not-at-top
    return BpeTokenizer(HfTokenizer.from_str(json.dumps(spec["hf"])))
  raise ValueError(f"unknown tokenizer kind {kind!r}")
