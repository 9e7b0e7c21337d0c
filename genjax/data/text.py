"""Text corpora as a TFDS builder read through grain: documents, splits, token windows.

A corpus is a set of documents: the ``.txt`` files of a directory (``"text"``: one
document per file, named by its file name without ``.txt``), or a small corpus that
genjax generates itself (``"counting"``: English number words, no files needed). The
builder `TextCorpus` writes the documents as ``array_record`` files with two
splits that hold out **whole documents** (`split_documents`): the documents named
in ``config.data.holdout``, else every ``holdout_every``-th in sorted order. Its
builder config is named by a hash of the documents and the split, so every corpus
and split rule is prepared once under ``genjax.data.data_dir()``.

Training reads random windows of ``block_size + 1`` tokens from the token stream of
the training documents (a fresh draw every step, a function of the seed and the
step, so the grain iterator state restores it); evaluation reads every token of
the held-out documents exactly once, in fixed windows that overlap by one token
(`eval_batches`). Batches are ``{"tokens": int32[B, T]}``, plus ``"mask"``
(``bool[B, T]``, which tokens are real) for evaluation.

The tokenizer (`genjax.data.tokenizers`) is trained on the training documents and
cached beside the prepared data; a run keeps its own copy in its work directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Iterator, Sequence

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds

from genjax import fileio
from genjax.data import builders
from genjax.data import kinds
from genjax.data import pipeline
from genjax.data import tokenizers as tok_lib

DATASETS = kinds.TEXT_DATASETS
TEXT_DIR_ENV = "GENJAX_TEXT_DIR"
SPLITS = ("train", "test")

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------- documents


def read_corpus(text_dir: str | os.PathLike[str]) -> dict[str, str]:
  """The ``.txt`` files of a directory as ``{name: text}``, names sorted.

  Raises:
    FileNotFoundError: when the directory is missing or holds no ``.txt`` file.
    ValueError: naming a file that is not UTF-8 and where it stops being so.
  """
  path = pathlib.Path(text_dir).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(
        f"text directory {path} does not exist; point config.data.text_dir (or "
        f"${TEXT_DIR_ENV}) at a directory of .txt files, one document per file")
  files = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
  if not files:
    raise FileNotFoundError(
        f"text directory {path} holds no .txt file; put one document per .txt "
        f"file there, or point config.data.text_dir (or ${TEXT_DIR_ENV}) elsewhere")
  docs = {}
  for f in files:
    raw = f.read_bytes()
    try:
      docs[f.stem] = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(
          f"{f} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 4]!r}); "
          "convert it (e.g. iconv -t UTF-8) or remove it from the directory") from e
  return docs


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
  """``n`` (0..9999) in English words: 342 -> "three hundred and forty-two"."""
  if n < 20:
    return _ONES[n]
  if n < 100:
    return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + _ONES[n % 10])
  if n < 1000:
    head = _ONES[n // 100] + " hundred"
    return head if n % 100 == 0 else f"{head} and {number_words(n % 100)}"
  head = number_words(n // 1000) + " thousand"
  return head if n % 1000 == 0 else f"{head} {number_words(n % 1000)}"


def counting_corpus(num_documents: int = 40, per_document: int = 60) -> dict[str, str]:
  """The generated corpus ``"counting"``: document k counts in words, a number a line.

  Small (about 100 KB), deterministic and learnable: for smoke runs and tests.
  """
  return {f"count_{k:02d}": "".join(
      number_words(k * per_document + i + 1) + "\n" for i in range(per_document))
          for k in range(num_documents)}


def split_documents(names: Sequence[str], holdout: Sequence[str] = (),
                    holdout_every: int = 0) -> dict[str, list[str]]:
  """The fixed rule that holds out whole documents.

  Args:
    names: the corpus's document names.
    holdout: names of the test documents; when empty, ``holdout_every`` applies.
    holdout_every: hold out every k-th document in sorted order (the k-th,
      2k-th, ...).

  Returns:
    ``{"train": [...], "test": [...]}``, each sorted.

  Raises:
    ValueError: a held-out name not in the corpus (with the closest names), no
      rule, or a rule that leaves a split empty.
  """
  names = sorted(names)
  if holdout:
    missing = [h for h in holdout if h not in names]
    if missing:
      import difflib  # pylint: disable=g-import-not-at-top
      hints = {m: difflib.get_close_matches(m, names, n=3, cutoff=0.5) for m in missing}
      raise ValueError(
          "config.data.holdout names documents that are not in the corpus: " +
          "; ".join(f"{m!r} (closest: {', '.join(h) or 'none'})" for m, h in hints.items()))
    test = [n for n in names if n in set(holdout)]
  elif holdout_every and holdout_every > 0:
    test = names[holdout_every - 1::holdout_every]
  else:
    raise ValueError("set config.data.holdout (document names) or "
                     "config.data.holdout_every (k > 0) to choose the test documents")
  train = [n for n in names if n not in set(test)]
  if not train or not test:
    raise ValueError(f"the split rule leaves {'no training' if not train else 'no test'} "
                     f"document ({len(names)} documents in all); hold out fewer or more")
  return {"train": train, "test": test}


# ------------------------------------------------------------------- builder


class TextCorpus(builders._Builder, skip_registration=True):  # pylint: disable=protected-access
  """A corpus of documents, ``{"name": text, "text": text}`` per example, by split.

  The builder config's name is a hash of the documents and the split, so that
  different corpora and split rules are prepared side by side.
  """

  name = "genjax_text"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, documents: dict[str, str] | None = None,
               splits: dict[str, list[str]] | None = None, config_name: str, **kwargs):
    self._documents, self._splits = documents, splits
    super().__init__(config=tfds.core.BuilderConfig(name=config_name), **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Plain-text documents, one example per document; the test "
                    "split holds out whole documents.",
        features=tfds.features.FeaturesDict({
            "name": tfds.features.Text(), "text": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager: Any):
    del dl_manager
    return {split: self._generate_examples(names) for split, names in self._splits.items()}

  def _generate_examples(self, names) -> Iterator[Any]:
    for i, name in enumerate(names):
      yield i, {"name": name, "text": self._documents[name]}


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A prepared corpus: where it lives and which documents each split holds."""
  root: pathlib.Path
  config_name: str
  splits: tuple[tuple[str, tuple[str, ...]], ...]  # ((split, document names), ...)

  def builder(self, **kwargs) -> TextCorpus:
    with _quiet_config_warning():
      return TextCorpus(config_name=self.config_name, data_dir=self.root,
                        file_format="array_record", **kwargs)

  @property
  def directory(self) -> pathlib.Path:
    return self.root / TextCorpus.name / self.config_name / str(TextCorpus.VERSION)


@contextlib.contextmanager
def _quiet_config_warning():
  """Hides TFDS's warning that the builder config is not a predefined one."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(max(level, logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(level)


def _config_get(config, name, default=None):
  value = config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)
  return default if value is None else value


def text_dir(config) -> pathlib.Path:
  """``config.data.text_dir``, else ``$GENJAX_TEXT_DIR``; an error when neither is set."""
  d = _config_get(config, "text_dir", "") or os.environ.get(TEXT_DIR_ENV, "")
  if not d:
    raise FileNotFoundError(
        "no text corpus: set --config.data.text_dir=<dir> or the environment variable "
        f"{TEXT_DIR_ENV}=<dir> to a directory of .txt files (one document per file)")
  return pathlib.Path(d).expanduser().absolute()


def documents(config) -> dict[str, str]:
  """The documents of ``config`` (the ``data`` block): a directory or ``counting``."""
  name = config.name
  if name == "counting":
    return counting_corpus()
  if name == "text":
    return read_corpus(text_dir(config))
  raise KeyError(f"unknown text dataset {name!r}; known: {', '.join(DATASETS)}")


def prepare(config) -> Corpus:
  """Prepares the corpus of ``config`` (the ``data`` block) once; returns it.

  Args:
    config: ``name`` (``"text"`` or ``"counting"``), ``text_dir``, ``holdout``,
      ``holdout_every``, ``data_dir``.
  """
  docs = documents(config)
  splits = split_documents(list(docs), tuple(_config_get(config, "holdout", ()) or ()),
                           int(_config_get(config, "holdout_every", 0) or 0))
  digest = hashlib.sha256(json.dumps(splits, sort_keys=True).encode())
  for name in sorted(docs):
    digest.update(name.encode() + b"\0" + docs[name].encode() + b"\0")
  corpus = Corpus(pipeline.data_dir(_config_get(config, "data_dir", "") or None),
                  f"{config.name}_{digest.hexdigest()[:16]}",
                  tuple((k, tuple(v)) for k, v in splits.items()))
  if not (corpus.directory / "dataset_info.json").is_file():
    corpus.root.mkdir(parents=True, exist_ok=True)
    with pipeline._file_lock(corpus.root / f".{TextCorpus.name}.lock"):  # pylint: disable=protected-access
      if not (corpus.directory / "dataset_info.json").is_file():
        print(f"genjax.data: preparing {config.name} ({len(docs)} documents, "
              f"{len(splits['test'])} held out) into {corpus.root} ...", end="",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        builder = corpus.builder(documents=docs, splits=splits)
        with pipeline._quiet_tfds():  # pylint: disable=protected-access
          builder.download_and_prepare(file_format="array_record")
        print(f" done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
  return corpus


@functools.lru_cache(maxsize=8)
def _split_texts(corpus: Corpus, split: str) -> tuple[tuple[str, str], ...]:
  source = corpus.builder().as_data_source(split)
  records = source.__getitems__(range(len(source)))
  return tuple((r["name"].decode(), r["text"].decode("utf-8")) for r in records)


def texts(corpus: Corpus, split: str) -> dict[str, str]:
  """``{name: text}`` of a split, read back through the TFDS data source."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} of a text corpus; known: {', '.join(SPLITS)}")
  return dict(_split_texts(corpus, split))


# ---------------------------------------------------------------- tokenizers


def tokenizer(config, corpus: Corpus | None = None) -> tok_lib.Tokenizer:
  """The tokenizer of ``config`` (the ``data`` block), trained on the training split.

  Cached beside the prepared corpus, keyed by ``tokenizer`` and ``vocab_size``.
  """
  corpus = corpus or prepare(config)
  kind = _config_get(config, "tokenizer", "char")
  if kind not in tok_lib.KINDS:
    raise ValueError(f"unknown config.data.tokenizer {kind!r}; choose one of "
                     f"{', '.join(tok_lib.KINDS)}")
  size = int(_config_get(config, "vocab_size", 0) or 0)
  path = corpus.directory / "tokenizers" / (f"{kind}_{size}.json" if kind == "bpe"
                                            else "char.json")
  if path.is_file():
    return tok_lib.load(path)
  tok = tok_lib.train(kind, texts(corpus, "train").values(), size or None)
  path.parent.mkdir(parents=True, exist_ok=True)
  tok_lib.save(tok, path)
  return tok


@functools.lru_cache(maxsize=8)
def _stream(corpus: Corpus, split: str, tok_json: str) -> tuple[np.ndarray, int]:
  docs = texts(corpus, split)
  num_chars = sum(len(t) for t in docs.values())
  digest = hashlib.sha256(tok_json.encode()).hexdigest()[:16]
  path = corpus.directory / "tokens" / f"{split}_{digest}.npy"
  if path.is_file():
    ids = np.load(path)
  else:
    tok = tok_lib.from_json(json.loads(tok_json))
    names = sorted(docs)
    ids = np.concatenate(tok.encode_many([docs[n] for n in names])).astype(np.int32)
    fileio.write_atomically(path, lambda tmp: np.save(tmp, ids))
  ids.flags.writeable = False
  return ids, num_chars


def token_stream(corpus: Corpus, split: str, tok: tok_lib.Tokenizer) -> tuple[np.ndarray, int]:
  """The split's documents encoded one by one and concatenated in name order.

  Encoded once per tokenizer and cached beside the prepared corpus (and per process).

  Returns:
    ``(int32[N] ids, number of characters)``.
  """
  return _stream(corpus, split, json.dumps(tok.to_json(), sort_keys=True))


# ------------------------------------------------------------------- batches


class _Windows:
  """Infinite random-access batches of random windows of one token stream.

  Row ``b`` of global batch ``i`` starts at a position drawn by hashing ``(key, i,
  b)``, uniform over every window that fits, so any batch is a function of its
  index and the grain iterator state (the next index) restores the stream exactly;
  this host serves rows ``first_row .. first_row + batch_size - 1``.
  """

  def __init__(self, stream: np.ndarray, batch_size: int, length: int, key: int,
               first_row: int = 0):
    self._stream, self._batch_size, self._length, self._key = stream, batch_size, length, key
    self._first_row = first_row
    self._num_starts = len(stream) - length + 1

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, i: int) -> Batch:
    row = self._first_row + np.arange(self._batch_size, dtype=np.uint32)
    h = pipeline._hash32(pipeline._hash32(  # pylint: disable=protected-access
        np.full_like(row, pipeline._key32(self._key, i))) ^ row)  # pylint: disable=protected-access
    h2 = pipeline._hash32(h ^ np.uint32(0x85EBCA6B))  # pylint: disable=protected-access
    # 64 random bits per row, so the modulo's bias is negligible for any stream
    r = (h.astype(np.uint64) << np.uint64(32)) | h2.astype(np.uint64)
    starts = (r % np.uint64(self._num_starts)).astype(np.int64)
    return {"tokens": self._stream[starts[:, None] + np.arange(self._length)]}


def train_iterator(stream: np.ndarray, *, batch_size: int, block_size: int, seed: int,
                   shard_index: int | None = None, shard_count: int | None = None,
                   prefetch: int = 4) -> grain.DatasetIterator:
  """Random windows of ``block_size + 1`` tokens, a fresh draw every step.

  Args:
    stream: the training split's token stream (`token_stream`).
    batch_size: windows per batch (per host).
    block_size: the model's context; windows hold ``block_size + 1`` tokens (the
      inputs and, shifted by one, the targets).
    seed: seeds the draws.
    shard_index, shard_count: this host serves rows ``shard_index * batch_size ..
      (shard_index + 1) * batch_size - 1`` of global batches of ``batch_size *
      shard_count`` windows (default: the JAX process index and count), so the
      global batches are the same on any number of hosts.
    prefetch: batches prepared ahead in a background thread.

  Returns:
    A checkpointable ``grain.DatasetIterator`` of ``{"tokens": int32[B, T]}``.
  """
  pipeline._check_batch_size(batch_size)  # pylint: disable=protected-access
  length = int(block_size) + 1
  if len(stream) < length:
    raise ValueError(f"the training text has {len(stream)} tokens, fewer than one window "
                     f"of block_size + 1 = {length}; lower config.model.block_size")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  key = pipeline._key32(seed, 0, 1, 7)  # pylint: disable=protected-access
  ds = grain.MapDataset.source(_Windows(stream, int(batch_size), length, key,
                                        shard_index * int(batch_size)))
  options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                              prefetch_buffer_size=max(prefetch, 1))
  return iter(ds.to_iter_dataset(options))


class _EvalWindows:
  """Consecutive batches of the fixed evaluation windows of one host."""

  def __init__(self, stream, starts, batch_size, length):
    self._stream, self._starts = stream, starts
    self._batch_size, self._length = batch_size, length

  def __len__(self) -> int:
    return -(-len(self._starts) // self._batch_size)

  def __getitem__(self, j: int) -> Batch:
    starts = self._starts[j * self._batch_size:(j + 1) * self._batch_size]
    pos = starts[:, None] + np.arange(self._length)
    valid = (pos < len(self._stream)) & (starts[:, None] >= 0)
    tokens = np.where(valid, self._stream[np.clip(pos, 0, len(self._stream) - 1)], 0)
    pad = self._batch_size - len(starts)  # every batch has the same shape
    return {"tokens": np.pad(tokens, ((0, pad), (0, 0))).astype(np.int32),
            "mask": np.pad(valid, ((0, pad), (0, 0)))}


class EvalBatches:
  """One ordered pass over the held-out token stream (see `eval_batches`).

  Attributes:
    num_tokens: tokens predicted over the whole split (all hosts): ``N - 1``.
    num_chars: characters those tokens decode to (for bits per character).
  """

  def __init__(self, dataset: grain.MapDataset, num_tokens: int, num_chars: int):
    self.dataset, self.num_tokens, self.num_chars = dataset, num_tokens, num_chars

  def __len__(self) -> int:
    return len(self.dataset)

  def __iter__(self):
    return iter(self.dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def eval_batches(stream: np.ndarray, num_chars: int, tok: tok_lib.Tokenizer, *,
                 batch_size: int, block_size: int, shard_index: int | None = None,
                 shard_count: int | None = None) -> EvalBatches:
  """Every token of a stream read once, in windows of ``block_size + 1`` tokens.

  Window ``w`` holds tokens ``w * block_size .. (w + 1) * block_size``: windows
  overlap by one token, so each token after the first is predicted exactly once.
  ``mask`` marks real tokens (the last window and batch are padded); every host
  gets the same number of equally shaped batches (windows ``w::shard_count``).
  """
  pipeline._check_batch_size(batch_size)  # pylint: disable=protected-access
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  n = len(stream)
  num_windows = max(-(-(n - 1) // block_size), 1)
  per_host = -(-num_windows // shard_count)
  starts = np.arange(shard_index, per_host * shard_count, shard_count) * block_size
  starts = np.where(starts < max(n - 1, 1), starts, -1).astype(np.int64)  # -1: padding
  first_chars = len(tok.decode(stream[:1]))
  ds = grain.MapDataset.source(_EvalWindows(stream, starts, int(batch_size),
                                            int(block_size) + 1))
  return EvalBatches(ds, num_tokens=n - 1, num_chars=num_chars - first_chars)
