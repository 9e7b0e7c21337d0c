"""Prepared TFDS data read through TFDS data sources and grain, no TensorFlow.

A data set is prepared once (``array_record`` files under ``data_dir()``) and
read back through the builder's data source. Decoding costs 20-30 us per
record read in bulk (~110 us for a lone MNIST ``__getitem__``), too slow to
feed a train step of a few milliseconds, so the train and eval pipelines read
a split once through the data source into numpy arrays (MNIST train is 47 MB)
and run grain over batches gathered from them.

Views of the images (``VIEWS``):
  * ``"8bit"``: the stored uint8 values 0..255.
  * ``"binarized"``: uint8 0/1 drawn as Bernoulli(pixel / 255). Training uses
    *dynamic* binarization (a fresh draw for every example in every epoch,
    deterministic given the seed); evaluation uses a *static* draw fixed by
    ``(seed, example index)``, the same on every call and for any batch size.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import functools
import os
import pathlib
import shutil
import sys
import threading
import time
from typing import Any, Iterator, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np

from genjax.data import builders
from genjax.data import kinds

DATASETS = kinds.IMAGE_DATASETS
VIEWS = ("binarized", "8bit")
DATA_DIR_ENV = "GENJAX_DATA_DIR"

_BUILDERS = {"digits": builders.Digits, "mnist": builders.Mnist}
_INFO = {
    "digits": {"input_shape": (8, 8, 1), "num_classes": 10,
               "splits": {"train": builders.DIGITS_NUM_TRAIN,
                          "test": 1797 - builders.DIGITS_NUM_TRAIN}},
    "mnist": {"input_shape": (28, 28, 1), "num_classes": 10,
              "splits": {"train": 60_000, "test": 10_000}},
}
_READ_CHUNK = 4096  # Records per `__getitems__` call when loading a split.

Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------
# Names, directories and preparation.


def data_dir(override: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """The directory holding prepared data sets.

  Args:
    override: a directory to use instead of the defaults.

  Returns:
    ``override`` if given, else ``$GENJAX_DATA_DIR`` if set, else
    ``$XDG_CACHE_HOME/genjax/datasets`` (``~/.cache/genjax/datasets`` when
    ``XDG_CACHE_HOME`` is unset), as an absolute path.
  """
  if override is not None and str(override):
    path = pathlib.Path(override)
  elif os.environ.get(DATA_DIR_ENV):
    path = pathlib.Path(os.environ[DATA_DIR_ENV])
  else:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    path = pathlib.Path(cache) / "genjax" / "datasets"
  return path.expanduser().absolute()


def _root(override: str | os.PathLike[str] | None) -> pathlib.Path:
  return data_dir(override)  # Inside functions, `data_dir` is an argument.


def _check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {DATASETS}.")


def _check_split(name: str, split: str) -> None:
  _check_name(name)
  splits = tuple(_INFO[name]["splits"])
  if split not in splits:
    raise ValueError(
        f"Unknown split {split!r} of dataset {name!r}; known splits: {splits}.")


def _check_view(view: str) -> None:
  if view not in VIEWS:
    raise ValueError(f"Unknown view {view!r}; known views: {VIEWS}.")


def info(name: str) -> dict[str, Any]:
  """Static facts about a data set; needs no preparation.

  Args:
    name: one of ``DATASETS``.

  Returns:
    ``{"input_shape": (H, W, C), "num_classes": 10,
    "splits": {"train": n, "test": n}}`` (a fresh copy). The split sizes are
    the canonical ones; MNIST prepared from other IDX files holds what those
    files hold.

  Raises:
    ValueError: if ``name`` is unknown (the message lists the known names).
  """
  _check_name(name)
  return copy.deepcopy(_INFO[name])


@contextlib.contextmanager
def _file_lock(path: pathlib.Path) -> Iterator[None]:
  """An exclusive ``flock`` on ``path``; serialises concurrent processes."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
  """Hides TFDS's progress bars while preparing (we print one line instead)."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.core.utils import tqdm_utils

  active = getattr(tqdm_utils, "_active", True)
  tqdm_utils.display_progress_bar(False)
  try:
    yield
  finally:
    tqdm_utils.display_progress_bar(active)


def _is_prepared(root: pathlib.Path, cls: type[Any]) -> bool:
  return (root / cls.name / str(cls.VERSION) / "dataset_info.json").is_file()


def _remove_incomplete(root: pathlib.Path, cls: type[Any]) -> None:
  """Removes what a killed preparation left (TFDS writes a data set into
  ``<name>/incomplete.<random>_<version>/`` and renames it when done); call with
  the preparation lock held, so that no live preparation owns them."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_datasets.core import constants
  for path in sorted((root / cls.name).glob(f"{constants.INCOMPLETE_PREFIX}*")):
    print(f"genjax.data: removing {path}, left by an interrupted preparation",
          file=sys.stderr, flush=True)
    if path.is_dir():
      shutil.rmtree(path)
    else:
      path.unlink()


def _builder(name: str, root: pathlib.Path, mnist_dir: Any) -> Any:
  """A prepared builder of ``name`` under ``root``, preparing it once."""
  cls = _BUILDERS[name]
  kwargs = {"mnist_dir": mnist_dir} if name == "mnist" else {}
  make = lambda: cls(data_dir=root, file_format="array_record", **kwargs)
  if not _is_prepared(root, cls):
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{cls.name}.lock"):
      if not _is_prepared(root, cls):  # Another process may have done it.
        _remove_incomplete(root, cls)
        builder = make()
        if name == "mnist":
          src = builder.source_dir()
          origin = (str(src) if src is not None
                    else f"{builders.MNIST_URL} (download)")
        else:
          origin = "scikit-learn"
        print(f"genjax.data: preparing {name} from {origin} into {root} ...",
              end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
          with _quiet_tfds():
            builder.download_and_prepare(file_format="array_record")
        except BaseException:
          print(" failed", file=sys.stderr, flush=True)
          raise
        print(f" done in {time.perf_counter() - start:.1f} s",
              file=sys.stderr, flush=True)
  return make()


def source(name: str, split: str, *,
           data_dir: str | os.PathLike[str] | None = None,
           mnist_dir: str | os.PathLike[str] | None = None,
           ) -> Sequence[dict[str, Any]]:
  """The random-access TFDS data source of a split; prepares it on first use.

  Args:
    name: one of ``DATASETS``.
    split: ``"train"`` or ``"test"``.
    data_dir: where prepared data lives (see ``genjax.data.data_dir``).
    mnist_dir: for ``"mnist"``, a directory of the four IDX files used when
      the data set is not prepared yet (else ``$GENJAX_MNIST_DIR``, else a
      download). Ignored once prepared.

  Returns:
    A sequence (``len``, ``__getitem__``, ``__getitems__``) of
    ``{"image": uint8[H, W, C], "label": int}``, in the split's order.

  Raises:
    ValueError: on an unknown name or split (the message lists the known ones).
    FileNotFoundError: if MNIST must be prepared but its files cannot be
      found or downloaded.
  """
  _check_split(name, split)
  return _builder(name, _root(data_dir), mnist_dir).as_data_source(split)


# Whole splits decoded once are kept as .npz files here, under the prepared-data
# root: decoding MNIST's 60,000 TFDS records takes ~7 s, loading the file ~0.1 s.
_ARRAYS_DIR = "genjax_arrays"


def _arrays_file(name: str, split: str, root: pathlib.Path, stamp: int) -> pathlib.Path:
  return root / _ARRAYS_DIR / f"{name}-{_BUILDERS[name].VERSION}-{split}-{stamp}.npz"


def _write_arrays(path: pathlib.Path, image: np.ndarray, label: np.ndarray) -> None:
  """Writes the decoded split atomically (a temporary file, then a rename) and
  removes the files of an older preparation; a read-only data directory is fine:
  the split is then decoded again next time."""
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
      np.savez(f, image=image, label=label)
    os.replace(tmp, path)
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(prefix + "*.npz"):
      if old != path:
        old.unlink(missing_ok=True)
  except OSError:
    pass


@functools.lru_cache(maxsize=4)
def _read_split(name: str, split: str, root: pathlib.Path,
                stamp: int) -> dict[str, np.ndarray]:
  """The split's arrays: from the decoded file of this preparation (``stamp``) when
  there is one, else decoded from the TFDS records and saved for next time."""
  shape = _INFO[name]["input_shape"]
  path = _arrays_file(name, split, root, stamp)
  try:
    with np.load(path) as f:
      image, label = f["image"], f["label"]
    if image.shape[1:] != shape or image.dtype != np.uint8 or len(label) != len(image):
      raise ValueError(f"{path} does not hold {name} arrays")
  except (OSError, ValueError, KeyError):  # absent, partial or foreign: decode again
    src = source(name, split, data_dir=root)
    n = len(src)
    image = np.empty((n, *shape), np.uint8)
    label = np.empty((n,), np.int32)
    for start in range(0, n, _READ_CHUNK):
      records = src.__getitems__(range(start, min(n, start + _READ_CHUNK)))
      image[start:start + len(records)] = np.stack([r["image"] for r in records])
      label[start:start + len(records)] = [r["label"] for r in records]
    _write_arrays(path, image, label)
  image.flags.writeable = False
  label.flags.writeable = False
  return {"image": image, "label": label}


def load_arrays(name: str, split: str, *,
                data_dir: str | os.PathLike[str] | None = None,
                mnist_dir: str | os.PathLike[str] | None = None) -> Batch:
  """A whole split as numpy arrays, read through the TFDS data source.

  The arrays are cached per process (a few splits) and read-only.

  Args:
    name: one of ``DATASETS``.
    split: ``"train"`` or ``"test"``.
    data_dir: where prepared data lives (see ``genjax.data.data_dir``).
    mnist_dir: see ``source``.

  Returns:
    ``{"image": uint8[N, H, W, C], "label": int32[N]}`` in the split's order.

  Raises:
    ValueError: on an unknown name or split.
    FileNotFoundError: if MNIST must be prepared but its files are missing.
  """
  _check_split(name, split)
  root = _root(data_dir)
  cls = _BUILDERS[name]
  if not _is_prepared(root, cls):
    _builder(name, root, mnist_dir)
  info_file = root / cls.name / str(cls.VERSION) / "dataset_info.json"
  stamp = info_file.stat().st_mtime_ns
  arrays = _read_split(name, split, root, stamp)
  return dict(arrays)


# ----------------------------------------------------------------------------
# Binarization: a counter-based hash, so draws are vectorised per batch yet
# depend only on (key, example id), never on batch size or position in a batch.

_M32 = 0xFFFFFFFF
# Bernoulli(x / 255) is `(hash >> 8) < _THRESHOLD_24[x]` (24-bit uniforms).
_THRESHOLD_24 = np.round(np.arange(256) * 2.0**24 / 255).astype(np.uint32)
_GOLDEN_32 = np.uint32(0x9E3779B9)


def _hash32(x: np.ndarray) -> np.ndarray:
  """The `lowbias32` integer hash (C. Wellons), elementwise on uint32."""
  x = np.array(x, np.uint32)
  x ^= x >> np.uint32(16)
  x *= np.uint32(0x7FEB352D)
  x ^= x >> np.uint32(15)
  x *= np.uint32(0x846CA68B)
  x ^= x >> np.uint32(16)
  return x


def _key32(*values: int) -> int:
  """Mixes arbitrary non-negative Python ints into one 32-bit key."""
  h = np.zeros((1,), np.uint32)
  for v in values:
    v = int(v)
    if v < 0:
      raise ValueError(f"Seeds must be non-negative, got {v}.")
    while True:  # Absorb 32 bits at a time.
      h = _hash32(h ^ np.uint32(v & _M32))
      v >>= 32
      if not v:
        break
  return int(h[0])


def _binarize(image_BxHxWxC: np.ndarray, key: int,
              ids_B: np.ndarray) -> np.ndarray:
  """Bernoulli(pixel / 255) draws as uint8 0/1: a function of key, id, pixel."""
  ids_B = np.asarray(ids_B, np.uint64)
  lo = (ids_B & np.uint64(_M32)).astype(np.uint32)
  hi = (ids_B >> np.uint64(32)).astype(np.uint32)
  h_B = _hash32(_hash32(hi ^ np.uint32(key)) ^ lo)
  d = int(np.prod(image_BxHxWxC.shape[1:]))
  pixel_D = np.arange(d, dtype=np.uint32) * _GOLDEN_32
  h_BxD = _hash32(h_B[:, None] ^ _hash32(pixel_D)[None, :])
  threshold = _THRESHOLD_24[image_BxHxWxC.reshape(len(ids_B), d)]
  bits = ((h_BxD >> np.uint32(8)) < threshold).astype(np.uint8)
  return bits.reshape(image_BxHxWxC.shape)


def _permutation(n: int, key: int) -> np.ndarray:
  """A permutation of ``range(n)`` fixed by ``key`` (sorts hashes, stable)."""
  h = _hash32(_hash32(np.arange(n, dtype=np.uint32)) ^ np.uint32(key))
  return np.argsort(h, kind="stable")


class _TrainBatches:
  """Infinite random-access sequence of one host's rows of shuffled global batches.

  Global batch ``i`` holds the examples at stream positions ``i * G`` to
  ``i * G + G - 1`` (``G = batch_size * shard_count``), and this host takes its
  rows ``shard_index * batch_size`` to ``(shard_index + 1) * batch_size - 1``.
  Position ``p`` is example ``perm_e[p % n]`` of the split in epoch
  ``e = p // n``, with a fresh permutation per epoch. Batches run across epoch
  boundaries and everything is a function of ``i``, so grain's iterator state
  (the next index) restores the stream exactly, and the global batches do not
  depend on the number of hosts. Gathering whole batches with numpy is ~8x faster
  than grain's per-example ``shuffle().repeat().batch()`` (470k vs 56k binarized
  MNIST examples/s).
  """

  def __init__(self, arrays: Batch, batch_size: int, key: int, shard_index: int,
               shard_count: int):
    self._image = arrays["image"]
    self._label = arrays["label"]
    self._n = len(self._label)
    self._batch_size = batch_size
    self._offset = shard_index * batch_size
    self._global_batch_size = batch_size * shard_count
    self._key = key
    self._perms: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return sys.maxsize

  def __getstate__(self) -> dict[str, Any]:  # Picklable for grain workers.
    return {k: v for k, v in self.__dict__.items()
            if k not in ("_perms", "_lock")}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _perms={}, _lock=threading.Lock())

  def _epoch_order(self, epoch: int) -> np.ndarray:
    with self._lock:
      order = self._perms.get(epoch)
    if order is None:
      order = _permutation(self._n, _key32(self._key, epoch))
      with self._lock:
        while len(self._perms) >= 4:  # Threads touch at most two epochs.
          del self._perms[min(self._perms)]
        self._perms[epoch] = order
    return order

  def positions(self, i: int) -> np.ndarray:
    """The stream positions of this host's rows of global batch ``i``."""
    return (i * self._global_batch_size + self._offset
            + np.arange(self._batch_size, dtype=np.int64))

  def __getitem__(self, i: int) -> Batch:
    epochs, offsets = np.divmod(self.positions(i), self._n)
    if epochs[0] == epochs[-1]:
      idx = self._epoch_order(int(epochs[0]))[offsets]
    else:
      idx = np.empty_like(offsets)
      for e in range(int(epochs[0]), int(epochs[-1]) + 1):
        mask = epochs == e
        idx[mask] = self._epoch_order(e)[offsets[mask]]
    return {"image": self._image[idx], "label": self._label[idx]}

  def __repr__(self) -> str:
    return (f"_TrainBatches(n={self._n}, batch_size={self._batch_size}, "
            f"global_batch_size={self._global_batch_size})")


class _OrderedBatches:
  """Finite random-access sequence of one host's rows of consecutive global batches.

  Global batch ``j`` holds examples ``j * G`` to ``j * G + G - 1`` of the split
  (``G = batch_size * shard_count``), the last one padded; this host takes rows
  ``shard_index * batch_size`` to ``(shard_index + 1) * batch_size - 1``, ``mask``
  marking the real examples. Every host gets the same number of batches of the
  same shape.
  """

  def __init__(self, arrays: Batch, batch_size: int, shard_index: int,
               shard_count: int):
    self._image = arrays["image"]
    self._label = arrays["label"]
    self._n = len(self._label)
    self._batch_size = batch_size
    self._offset = shard_index * batch_size
    self._global_batch_size = batch_size * shard_count

  def __len__(self) -> int:
    return -(-self._n // self._global_batch_size)

  def __getitem__(self, j: int) -> Batch:
    idx = (j * self._global_batch_size + self._offset
           + np.arange(self._batch_size, dtype=np.int64))
    mask = idx < self._n
    idx = np.where(mask, idx, 0)
    return {"image": self._image[idx], "label": self._label[idx], "index": idx,
            "mask": mask}

  def __repr__(self) -> str:
    return (f"_OrderedBatches(n={self._n}, batch_size={self._batch_size}, "
            f"global_batch_size={self._global_batch_size})")


def _train_view(index: int, batch: Batch, *, view: str, key: int, positions) -> Batch:
  """The view of train batch ``index`` of the infinite stream."""
  image = batch["image"]
  if view == "binarized":
    # Stream positions are unique, so each example gets a fresh draw in each
    # epoch; they are fixed given the seed, so a resumed run sees the same.
    image = _binarize(image, key, positions(index).astype(np.uint64))
  return {"image": image, "label": batch["label"]}


def _eval_view(batch: Batch, *, view: str, key: int) -> Batch:
  image = batch["image"]
  if view == "binarized":  # Static: a function of the example's split index.
    image = _binarize(image, key, batch["index"])
  return {"image": image, "label": batch["label"], "mask": batch["mask"]}


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  """``(shard_index, shard_count)``, defaulting to this JAX process and their count."""
  if shard_index is None:
    shard_index = jax.process_index()
  if shard_count is None:
    shard_count = jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ValueError(
        f"Need 0 <= shard_index < shard_count, got {shard_index=}, "
        f"{shard_count=}.")
  return shard_index, shard_count


def _check_batch_size(batch_size: int) -> None:
  if isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


def train_iterator(name: str, *, batch_size: int, view: str, seed: int,
                   data_dir: str | os.PathLike[str] | None = None,
                   mnist_dir: str | os.PathLike[str] | None = None,
                   shard_index: int | None = None,
                   shard_count: int | None = None,
                   split: str = "train",
                   prefetch: int = 4) -> grain.DatasetIterator:
  """An infinite, checkpointable iterator of shuffled training batches.

  The split is read once through the TFDS data source (``load_arrays``) and
  grain serves batches from ``MapDataset.source`` over an in-memory batch
  source: a seeded shuffle of the whole split redrawn every epoch, repeated
  forever, in global batches of ``batch_size * shard_count`` examples (batches
  run across epoch boundaries, none is partial), of which this host takes rows
  ``shard_index * batch_size`` to ``(shard_index + 1) * batch_size - 1``; then
  the view as a ``map_with_index``. The hosts' rows are disjoint, together they
  cover every epoch, and the global batches are the same on any number of hosts:
  a run on two hosts sees the data of the same run on one.

  Args:
    name: one of ``DATASETS``.
    batch_size: examples per batch (per host).
    view: one of ``VIEWS``; ``"binarized"`` is dynamic binarization: a fresh
      Bernoulli(pixel / 255) draw per example per epoch, fixed by ``seed``.
    seed: non-negative int seeding the shuffle and the binarization.
    data_dir: where prepared data lives (see ``genjax.data.data_dir``).
    mnist_dir: see ``source``.
    shard_index: this host's shard; defaults to ``jax.process_index()``.
    shard_count: number of shards; defaults to ``jax.process_count()``.
    split: the split to train on.
    prefetch: batches prepared ahead by a background thread (0: none, batches
      are computed on demand in the calling thread).

  Returns:
    A ``grain.DatasetIterator`` of ``{"image": uint8[B, H, W, C],
    "label": int32[B]}``. ``get_state()``/``set_state()`` round-trip: an
    iterator restored from a state yields exactly the batches that followed.

  Raises:
    ValueError: on an unknown name, split or view, or bad sizes.
    FileNotFoundError: if MNIST must be prepared but its files are missing.
  """
  _check_split(name, split)
  _check_view(view)
  _check_batch_size(batch_size)
  if prefetch < 0:
    raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
  arrays = load_arrays(name, split, data_dir=data_dir, mnist_dir=mnist_dir)
  shard_index, shard_count = _shard(shard_index, shard_count)
  key = _key32(seed, 0)
  batches = _TrainBatches(arrays, int(batch_size), _key32(key, 1), shard_index,
                          shard_count)
  ds = grain.MapDataset.source(batches).map_with_index(functools.partial(
      _train_view, view=view, key=_key32(key, 2), positions=batches.positions))
  options = grain.ReadOptions(num_threads=1 if prefetch else 0,
                              prefetch_buffer_size=max(prefetch, 1))
  return iter(ds.to_iter_dataset(options))


class EvalBatches:
  """One ordered pass over a split in batches (see ``eval_batches``).

  Attributes:
    dataset: the underlying finite ``grain.MapDataset`` of batches.
  """

  def __init__(self, dataset: grain.MapDataset):
    self.dataset = dataset

  def __len__(self) -> int:
    return len(self.dataset)

  def __getitem__(self, j: int) -> Batch:
    return self.dataset[j]

  def __iter__(self) -> Iterator[Batch]:
    options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
    return iter(self.dataset.to_iter_dataset(options))


def eval_batches(name: str, split: str = "test", *, batch_size: int,
                 view: str, seed: int = 0,
                 data_dir: str | os.PathLike[str] | None = None,
                 mnist_dir: str | os.PathLike[str] | None = None,
                 shard_index: int | None = None,
                 shard_count: int | None = None) -> EvalBatches:
  """One ordered pass over a split in batches, for evaluation.

  Args:
    name: one of ``DATASETS``.
    split: ``"train"`` or ``"test"``.
    batch_size: examples per batch (per host).
    view: one of ``VIEWS``; ``"binarized"`` is a static binarization: example
      ``i`` of the split gets a draw fixed by ``(seed, i)``, the same on every
      call, for every batch size and shard layout.
    seed: non-negative int seeding the static binarization.
    data_dir: where prepared data lives (see ``genjax.data.data_dir``).
    mnist_dir: see ``source``.
    shard_index: this host's shard; defaults to ``jax.process_index()``.
    shard_count: number of shards; defaults to ``jax.process_count()``. Global
      batch ``j`` holds examples ``j * G .. (j + 1) * G - 1`` in the split's
      order (``G = batch_size * shard_count``) and host ``i`` takes its rows
      ``i * batch_size .. (i + 1) * batch_size - 1``: the same global batches on
      any number of hosts, and every host gets the same number of equally shaped
      batches (the last global batch is padded).

  Returns:
    A finite, re-iterable ``EvalBatches``: ``len()`` is the number of
    batches, each iteration is one pass in order over ``{"image":
    uint8[B, H, W, C], "label": int32[B], "mask": bool[B]}`` batches, the same
    every time; ``mask`` is False on the padding rows.

  Raises:
    ValueError: on an unknown name, split or view, or bad sizes.
    FileNotFoundError: if MNIST must be prepared but its files are missing.
  """
  _check_split(name, split)
  _check_view(view)
  _check_batch_size(batch_size)
  arrays = load_arrays(name, split, data_dir=data_dir, mnist_dir=mnist_dir)
  ds = grain.MapDataset.source(
      _OrderedBatches(arrays, int(batch_size), *_shard(shard_index, shard_count)))
  ds = ds.map(functools.partial(_eval_view, view=view, key=_key32(seed, 3)))
  return EvalBatches(ds)


# ----------------------------------------------------------------------------
# Dequantization.


def dequantize(image_uint8: jax.Array | np.ndarray, key: jax.Array,
               num_bits: int = 8) -> jax.Array:
  """Uniform dequantization: ``(x + u) / 2**num_bits`` with ``u ~ U[0, 1)``.

  Maps discrete data ``x`` in ``{0, ..., 2**num_bits - 1}`` to continuous
  ``y`` in ``[0, 1)^D``, where each ``x`` owns the cube
  ``[x / 2**num_bits, (x + 1) / 2**num_bits)`` of volume ``2**(-num_bits * D)``.
  Usable inside ``jax.jit`` (``num_bits`` static).

  Converting a density ``p`` on ``[0, 1)^D`` to a probability of the discrete
  data: ``P(x)`` is the integral of ``p`` over ``x``'s cube, i.e.
  ``P(x) = 2**(-num_bits * D) * E_u[p((x + u) / 2**num_bits)]``, so by Jensen
  ``log P(x) >= E_u[log p((x + u) / 2**num_bits)] - D * log(2**num_bits)``.
  For 8-bit images: ``log P(x) >= E_u[log p((x + u) / 256)] - D * log(256)``;
  bits/dim is then ``-log P(x) / (D * log(2))`` (Theis et al. 2016).

  The input must already hold values below ``2**num_bits``: pass
  ``num_bits=8`` for the ``"8bit"`` view, ``num_bits=1`` for ``"binarized"``,
  and reduce 8-bit data to ``n`` bits first with ``x >> (8 - n)``.

  Args:
    image_uint8: integer images, any shape, values in ``[0, 2**num_bits)``.
    key: a JAX PRNG key.
    num_bits: bits per value of the discrete data.

  Returns:
    float32 array of the input's shape with values in ``[0, 1)``, and
    ``floor(y * 2**num_bits) == x`` exactly.

  References:
    Theis, van den Oord and Bethge, "A note on the evaluation of generative
    models", ICLR 2016. Dinh, Sohl-Dickstein and Bengio, "Density estimation
    using Real NVP", ICLR 2017.
  """
  x = jnp.asarray(image_uint8).astype(jnp.float32)
  u = jax.random.uniform(key, x.shape, jnp.float32)
  scale = float(2**num_bits)
  y = (x + u) / scale
  # In float32, x + u rounds up to x + 1 when u is within 2**-17 of 1 (x up to
  # 255); clamp to the largest float below (x + 1) / scale so that
  # floor(y * scale) == x always holds.
  return jnp.minimum(y, jnp.nextafter((x + 1.0) / scale, jnp.float32(0)))
