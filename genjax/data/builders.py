"""TFDS builders for the offline image data sets: scikit-learn digits and MNIST.

Both builders write ``array_record`` files (read back with ``as_data_source``,
no TensorFlow) and store images as ``tfds.features.Tensor`` uint8 ``[H, W, C]``
(an ``Image`` feature would need TensorFlow to encode). Examples keep their
original order (``disable_shuffling=True``).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import socket
import urllib.parse
import zlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
MNIST_DIR_ENV = "GENJAX_MNIST_DIR"
# (split, kind) -> base file name of the standard IDX files.
MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {"images": (2051, 3), "labels": (2049, 1)}  # magic, ndim
DIGITS_NUM_TRAIN = 1497  # train = the first 1,497 images, test = the last 300.


class IdxFormatError(ValueError):
  """An IDX file is truncated, corrupt or not the expected kind."""


def read_idx(path: str | os.PathLike[str], kind: str) -> np.ndarray:
  """Reads an MNIST IDX file, gzipped or not (detected from its first bytes).

  The format is a big-endian int32 magic number (2051 for images, 2049 for
  labels), one big-endian int32 per dimension, then the raw uint8 values.

  Args:
    path: the file.
    kind: ``"images"`` (3-D ``[N, rows, cols]``) or ``"labels"`` (1-D ``[N]``).

  Returns:
    The uint8 array stored in the file.

  Raises:
    IdxFormatError: on a wrong magic number, a size that disagrees with the
      header, or a corrupt gzip stream.
  """
  path = pathlib.Path(path)
  magic, ndim = _IDX_MAGIC[kind]
  data = path.read_bytes()
  if data[:2] == b"\x1f\x8b":  # The gzip magic; IDX files start with 0 0.
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError.
      raise IdxFormatError(f"{path}: cannot decompress ({e}).") from e
  header_size = 4 * (1 + ndim)
  found = (int(np.frombuffer(data, ">i4", count=1)[0]) if len(data) >= 4
           else None)
  if found != magic:
    raise IdxFormatError(
        f"{path}: magic number {found}, expected {magic} for IDX {kind}; "
        f"the file is corrupt or is not an MNIST {kind} file.")
  if len(data) < header_size:
    raise IdxFormatError(
        f"{path}: {len(data)} bytes, too short for an IDX {kind} header.")
  dims = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
  size = int(np.prod(dims))
  if len(data) != header_size + size:
    raise IdxFormatError(
        f"{path}: header says shape {dims} ({size} values) but the file holds "
        f"{len(data) - header_size} values after the header.")
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(dims)


def find_mnist_files(
    mnist_dir: str | os.PathLike[str],
) -> dict[tuple[str, str], pathlib.Path]:
  """Finds the four MNIST IDX files in a directory (gzipped or not).

  Args:
    mnist_dir: directory holding ``train-images-idx3-ubyte``,
      ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
      ``t10k-labels-idx1-ubyte``, each with or without a ``.gz`` suffix.

  Returns:
    ``{(split, kind): path}`` for the four files.

  Raises:
    FileNotFoundError: if the directory or any file is missing; the message
      names the missing files, every path searched and how to fix it.
  """
  mnist_dir = pathlib.Path(mnist_dir).expanduser()
  found, missing, searched = {}, [], []
  for key, base in MNIST_FILES.items():
    candidates = [mnist_dir / (base + ".gz"), mnist_dir / base]
    searched += candidates
    hit = next((p for p in candidates if p.is_file()), None)
    if hit is None:
      missing.append(base)
    else:
      found[key] = hit
  if missing:
    where = ("does not exist" if not mnist_dir.is_dir()
             else f"lacks {', '.join(m + '[.gz]' for m in missing)}")
    raise FileNotFoundError(
        f"MNIST directory {mnist_dir} {where}.\n" + _mnist_help(searched))
  return found


def _mnist_help(searched: list[pathlib.Path]) -> str:
  names = ", ".join(MNIST_FILES.values())
  lines = [
      f"MNIST needs the four IDX files {names}, each either gzipped "
      "(name + '.gz') or plain.",
      "Paths searched:" if searched else "No directory was searched.",
      *(f"  {p}" for p in searched),
      f"Fix: put the files in a directory and set {MNIST_DIR_ENV}=<dir>, or pass "
      "--config.data.mnist_dir=<dir> to a launcher (mnist_dir=<dir> in Python), or "
      f"allow the download from {MNIST_URL} by leaving both unset on a machine with "
      "network access.",
  ]
  return "\n".join(lines)


def _check_resolvable(url: str) -> None:
  """Fails fast when the host of ``url`` has no DNS entry and no proxy is set.

  Without this, TFDS's downloader retries an unreachable host for ~3 minutes.
  """
  if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY",
                                     "all_proxy", "ALL_PROXY")):
    return
  host = urllib.parse.urlparse(url).hostname
  try:
    socket.getaddrinfo(host, 443)
  except OSError as e:
    raise ConnectionError(f"cannot resolve host {host} ({e})") from e


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the genjax builders (unregistered: not in ``tfds.builder``)."""

  # TFDS looks for a checksums file next to the builder's code; for a module
  # in a package that lookup needs the optional `importlib_resources` package.
  # These builders register no checksums, so skip the lookup.
  code_path = None

  # TFDS prints two banners to stdout; genjax.data prints one line instead.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass


class Digits(_Builder, skip_registration=True):
  """scikit-learn's 8x8 handwritten digits (1,797 images, offline).

  Images are ``uint8[8, 8, 1]`` rescaled from scikit-learn's 0..16 to 0..255
  as ``np.round(v * 255 / 16)``. Splits, in scikit-learn's order: ``train`` is
  the first 1,497 images, ``test`` the last 300.
  """

  name = "genjax_digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            "scikit-learn's 8x8 digits (UCI optical recognition of "
            "handwritten digits, test part), uint8 images round(v * 255 / 16)."
        ),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
    del dl_manager  # The data ships inside scikit-learn.
    from sklearn import datasets  # pylint: disable=g-import-not-at-top

    digits = datasets.load_digits()
    images_Nx8x8 = np.round(digits.images * 255 / 16).astype(np.uint8)
    images_Nx8x8x1 = images_Nx8x8[..., None]
    labels_N = digits.target.astype(np.int64)
    n = DIGITS_NUM_TRAIN
    return {
        "train": self._generate_examples(images_Nx8x8x1[:n], labels_N[:n]),
        "test": self._generate_examples(images_Nx8x8x1[n:], labels_N[n:]),
    }

  def _generate_examples(self, images, labels) -> Iterator[Any]:
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


class Mnist(_Builder, skip_registration=True):
  """MNIST, 28x28x1 uint8, train (60,000) and test (10,000) in original order.

  Source, in order: the ``mnist_dir`` argument, the ``GENJAX_MNIST_DIR``
  environment variable (a directory of the four IDX files, gzipped or not),
  else a download of the four ``.gz`` files from the URLs of the TFDS catalog.
  """

  name = "genjax_mnist"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, mnist_dir: str | os.PathLike[str] | None = None,
               **kwargs: Any):
    self._mnist_dir = mnist_dir
    super().__init__(**kwargs)

  def source_dir(self) -> pathlib.Path | None:
    """The IDX directory that preparation reads, or None to download."""
    d = self._mnist_dir if self._mnist_dir is not None else os.environ.get(
        MNIST_DIR_ENV)
    return pathlib.Path(d).expanduser() if d else None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="The MNIST database of handwritten digits.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation=(
            "@article{lecun2010mnist, title={MNIST handwritten digit database},"
            " author={LeCun, Yann and Cortes, Corinna and Burges, CJ},"
            " journal={ATT Labs [Online]. Available: "
            "http://yann.lecun.com/exdb/mnist}, volume={2}, year={2010}}"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
    source_dir = self.source_dir()
    if source_dir is not None:
      paths = find_mnist_files(source_dir)
    else:
      urls = {key: MNIST_URL + base + ".gz"
              for key, base in MNIST_FILES.items()}
      try:
        _check_resolvable(MNIST_URL)
        downloaded = dl_manager.download(
            {"/".join(key): url for key, url in urls.items()})
      except Exception as e:  # pylint: disable=broad-except
        raise FileNotFoundError(
            f"MNIST: no directory given ({MNIST_DIR_ENV} unset, no mnist_dir) "
            f"and the download from {MNIST_URL} failed: "
            f"{type(e).__name__}: {e}\n" + _mnist_help([])) from e
      paths = {key: pathlib.Path(downloaded["/".join(key)]) for key in urls}
    return {
        split: self._generate_examples(paths[(split, "images")],
                                       paths[(split, "labels")])
        for split in ("train", "test")
    }

  def _generate_examples(self, images_path, labels_path) -> Iterator[Any]:
    images_NxHxW = read_idx(images_path, "images")
    labels_N = read_idx(labels_path, "labels")
    if images_NxHxW.shape[1:] != (28, 28):
      raise IdxFormatError(
          f"{images_path}: images of shape {images_NxHxW.shape[1:]}, "
          "expected (28, 28).")
    if len(images_NxHxW) != len(labels_N):
      raise IdxFormatError(
          f"{images_path} holds {len(images_NxHxW)} images but {labels_path} "
          f"holds {len(labels_N)} labels.")
    if labels_N.size and labels_N.max() > 9:
      raise IdxFormatError(f"{labels_path}: label {labels_N.max()} > 9.")
    for i in range(len(labels_N)):
      yield i, {"image": images_NxHxW[i, :, :, None], "label": int(labels_N[i])}
