"""Tests for genjax.data: builders, sources, grain pipelines, dequantization."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import io
import json
import os
import pathlib
import struct
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import data

_SPLITS = {"train": 20, "test": 10}


def _write_idx(path: pathlib.Path, array: np.ndarray, magic: int) -> None:
  raw = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
  raw += array.astype(np.uint8).tobytes()
  path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def _fake_mnist(directory: pathlib.Path,
                seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
  """Writes a tiny MNIST (train gzipped, test plain); returns its arrays."""
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for split, n in _SPLITS.items():
    prefix, suffix = ("train", ".gz") if split == "train" else ("t10k", "")
    image = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    image[0, 0, :2] = (0, 255)  # Both extremes present.
    label = rng.integers(0, 10, (n,), dtype=np.uint8)
    _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", image, 2051)
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", label, 2049)
    arrays[split] = {"image": image[..., None], "label": label.astype(np.int32)}
  return arrays


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("digits_data")
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    data.load_arrays("digits", "train", data_dir=root)
  assert "preparing digits" in stderr.getvalue()
  return root


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory):
  """A tiny MNIST prepared from $GENJAX_MNIST_DIR (not from an argument)."""
  idx_dir = tmp_path_factory.mktemp("idx")
  arrays = _fake_mnist(idx_dir)
  root = tmp_path_factory.mktemp("fake_mnist_data")
  stderr = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(stderr):
    mp.setenv("GENJAX_MNIST_DIR", str(idx_dir))
    data.source("mnist", "train", data_dir=root)
  assert f"preparing mnist from {idx_dir}" in stderr.getvalue()
  return root, arrays


@pytest.fixture(scope="module")
def real_mnist_root(data_dir):
  """The session's prepared-data directory with real MNIST prepared from the IDX
  files (once per test session: preparing it takes ~20 s, and the metrics tests
  use the same)."""
  mnist_dir = os.environ.get("GENJAX_MNIST_DIR")
  if not mnist_dir:
    pytest.skip("GENJAX_MNIST_DIR is unset: no real MNIST IDX files to test.")
  if not pathlib.Path(mnist_dir).is_dir():
    pytest.skip(f"GENJAX_MNIST_DIR={mnist_dir} is not a directory.")
  data.source("mnist", "test", data_dir=data_dir, mnist_dir=mnist_dir)
  return data_dir


# ----------------------------------------------------------------------------
# Names, directories, info.


def test_data_dir_resolution(monkeypatch, tmp_path):
  monkeypatch.setenv("GENJAX_DATA_DIR", str(tmp_path / "env"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert data.data_dir(tmp_path / "arg") == tmp_path / "arg"
  assert data.data_dir() == tmp_path / "env"
  monkeypatch.delenv("GENJAX_DATA_DIR")
  assert data.data_dir() == tmp_path / "xdg" / "genjax" / "datasets"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert data.data_dir() == pathlib.Path.home() / ".cache/genjax/datasets"


def test_info_needs_no_preparation():
  assert data.DATASETS == ("digits", "mnist")
  assert data.VIEWS == ("binarized", "8bit")
  assert data.info("mnist") == {"input_shape": (28, 28, 1), "num_classes": 10,
                                "splits": {"train": 60000, "test": 10000}}
  assert data.info("digits") == {"input_shape": (8, 8, 1), "num_classes": 10,
                                 "splits": {"train": 1497, "test": 300}}


def test_unknown_names_list_the_known_ones(digits_root):
  with pytest.raises(ValueError, match=r"'cifar'.*'digits', 'mnist'"):
    data.info("cifar")
  with pytest.raises(ValueError, match=r"'cifar'.*'digits', 'mnist'"):
    data.source("cifar", "train", data_dir=digits_root)
  with pytest.raises(ValueError, match=r"'valid'.*'train', 'test'"):
    data.load_arrays("digits", "valid", data_dir=digits_root)
  with pytest.raises(ValueError, match=r"'gray'.*'binarized', '8bit'"):
    data.train_iterator("digits", batch_size=4, view="gray", seed=0,
                        data_dir=digits_root)
  with pytest.raises(ValueError, match=r"'gray'.*'binarized', '8bit'"):
    data.eval_batches("digits", batch_size=4, view="gray", data_dir=digits_root)
  with pytest.raises(ValueError, match="shard_index"):
    data.eval_batches("digits", batch_size=4, view="8bit", data_dir=digits_root,
                      shard_index=2, shard_count=2)


# ----------------------------------------------------------------------------
# digits.


def test_digits_prepared_and_read_back(digits_root):
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  ref = datasets.load_digits()
  expected = np.round(ref.images * 255 / 16).astype(np.uint8)[..., None]
  train = data.load_arrays("digits", "train", data_dir=digits_root)
  test = data.load_arrays("digits", "test", data_dir=digits_root)
  assert len(train["image"]) == 1497 and len(test["image"]) == 300
  for arrays in (train, test):
    assert arrays["image"].dtype == np.uint8
    assert arrays["label"].dtype == np.int32
    assert arrays["image"].shape[1:] == (8, 8, 1)
  image = np.concatenate([train["image"], test["image"]])
  label = np.concatenate([train["label"], test["label"]])
  np.testing.assert_array_equal(image, expected)  # Also: sklearn's order.
  np.testing.assert_array_equal(label, ref.target)
  assert image.min() == 0 and image.max() == 255
  assert set(np.unique(label)) == set(range(10))


def test_a_decoded_split_is_saved_once_and_read_back_equal(digits_root):
  """load_arrays keeps each decoded split as a file beside the prepared data; a new
  process (here: the in-process cache cleared) reads it instead of the records, and
  a damaged file is decoded again and replaced."""
  from genjax.data import pipeline  # pylint: disable=g-import-not-at-top
  pipeline._read_split.cache_clear()  # pylint: disable=protected-access
  first = data.load_arrays("digits", "test", data_dir=digits_root)
  files = sorted((digits_root / "genjax_arrays").glob("digits-*-test-*.npz"))
  assert len(files) == 1
  pipeline._read_split.cache_clear()  # pylint: disable=protected-access
  src = pipeline.source
  try:  # the saved file is read: the TFDS records are not touched
    pipeline.source = lambda *a, **k: pytest.fail("decoded the records again")
    again = data.load_arrays("digits", "test", data_dir=digits_root)
  finally:
    pipeline.source = src
  for key in ("image", "label"):
    np.testing.assert_array_equal(again[key], first[key])
    assert again[key].dtype == first[key].dtype and not again[key].flags.writeable
  files[0].write_bytes(b"not an npz")
  pipeline._read_split.cache_clear()  # pylint: disable=protected-access
  repaired = data.load_arrays("digits", "test", data_dir=digits_root)
  np.testing.assert_array_equal(repaired["image"], first["image"])
  with np.load(files[0]) as f:  # rewritten
    np.testing.assert_array_equal(f["label"], first["label"])


def test_digits_source_is_random_access(digits_root):
  src = data.source("digits", "test", data_dir=digits_root)
  test = data.load_arrays("digits", "test", data_dir=digits_root)
  assert len(src) == 300
  record = src[7]
  assert record["image"].dtype == np.uint8
  assert record["image"].shape == (8, 8, 1)
  np.testing.assert_array_equal(record["image"], test["image"][7])
  assert int(record["label"]) == test["label"][7]


def test_later_calls_print_nothing(digits_root, capfd):
  data.source("digits", "train", data_dir=digits_root)
  next(data.train_iterator("digits", batch_size=4, view="8bit", seed=0,
                           data_dir=digits_root, shard_index=0, shard_count=1))
  out, err = capfd.readouterr()
  assert out == "" and err == ""


# ----------------------------------------------------------------------------
# MNIST from IDX files.


def test_mnist_from_idx_dir_reads_exactly(fake_mnist):
  root, arrays = fake_mnist
  for split in _SPLITS:
    got = data.load_arrays("mnist", split, data_dir=root)
    np.testing.assert_array_equal(got["image"], arrays[split]["image"])
    np.testing.assert_array_equal(got["label"], arrays[split]["label"])
    assert got["label"].dtype == np.int32
  assert len(data.source("mnist", "test", data_dir=root)) == 10


def test_mnist_explicit_dir_missing_file(tmp_path):
  idx_dir = tmp_path / "idx"
  _fake_mnist(idx_dir)
  (idx_dir / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(FileNotFoundError) as err:
    data.source("mnist", "train", data_dir=tmp_path / "d", mnist_dir=idx_dir)
  msg = str(err.value)
  assert "lacks t10k-labels-idx1-ubyte" in msg
  assert str(idx_dir / "t10k-labels-idx1-ubyte.gz") in msg
  assert str(idx_dir / "t10k-labels-idx1-ubyte") in msg
  assert str(idx_dir / "train-images-idx3-ubyte.gz") in msg
  assert "GENJAX_MNIST_DIR" in msg and "mnist_dir" in msg
  assert not (tmp_path / "d" / "genjax_mnist" / "1.0.0").exists()


def test_mnist_missing_dir_from_env(tmp_path, monkeypatch):
  monkeypatch.setenv("GENJAX_MNIST_DIR", str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.source("mnist", "test", data_dir=tmp_path / "d")


def test_idx_corrupt_magic_and_size(tmp_path):
  good = tmp_path / "labels"
  _write_idx(good, np.arange(5), 2049)
  np.testing.assert_array_equal(data.read_idx(good, "labels"), np.arange(5))
  with pytest.raises(data.IdxFormatError,
                     match="magic number 2049, expected 2051"):
    data.read_idx(good, "images")
  bad = tmp_path / "bad.gz"
  _write_idx(bad, np.zeros((2, 28, 28)), 1234)
  with pytest.raises(data.IdxFormatError, match="magic number 1234"):
    data.read_idx(bad, "images")
  truncated = tmp_path / "truncated"
  truncated.write_bytes(good.read_bytes()[:-1])
  with pytest.raises(data.IdxFormatError, match="header says shape"):
    data.read_idx(truncated, "labels")
  not_gzip = tmp_path / "x.gz"
  not_gzip.write_bytes(b"\x1f\x8bnonsense")
  with pytest.raises(data.IdxFormatError, match="decompress"):
    data.read_idx(not_gzip, "labels")


def test_mnist_corrupt_file_fails_preparation(tmp_path):
  idx_dir = tmp_path / "idx"
  _fake_mnist(idx_dir)
  _write_idx(idx_dir / "t10k-labels-idx1-ubyte", np.zeros(10), 2051)
  with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
    data.source("mnist", "test", data_dir=tmp_path / "d", mnist_dir=idx_dir)


def test_real_mnist(real_mnist_root):
  train = data.load_arrays("mnist", "train", data_dir=real_mnist_root)
  test = data.load_arrays("mnist", "test", data_dir=real_mnist_root)
  assert train["image"].shape == (60000, 28, 28, 1)
  assert test["image"].shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(train["label"][:10],
                                [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
  assert train["image"].mean() == pytest.approx(33.3184, abs=1e-4)
  batch = next(data.train_iterator("mnist", batch_size=128, view="binarized",
                                   seed=0, data_dir=real_mnist_root))
  assert batch["image"].shape == (128, 28, 28, 1)


# ----------------------------------------------------------------------------
# Training iterator.


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def _rows(image, label):
  """Sorted (image bytes, label) rows: a multiset of examples."""
  return sorted((im.tobytes(), int(l)) for im, l in zip(image, label))


def test_train_batches_shape_and_dtype(digits_root):
  for view in data.VIEWS:
    batch = next(data.train_iterator("digits", batch_size=16, view=view,
                                     seed=0, data_dir=digits_root))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (16, 8, 8, 1)
    assert batch["image"].dtype == np.uint8
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32


def test_train_epochs_are_fresh_permutations(digits_root):
  train = data.load_arrays("digits", "train", data_dir=digits_root)
  it = data.train_iterator("digits", batch_size=1497, view="8bit", seed=3,
                           data_dir=digits_root, shard_index=0, shard_count=1)
  epoch0, epoch1 = _take(it, 2)  # One batch is exactly one epoch here.
  expected = _rows(train["image"], train["label"])
  assert _rows(epoch0["image"], epoch0["label"]) == expected
  assert _rows(epoch1["image"], epoch1["label"]) == expected
  assert not np.array_equal(epoch0["label"], epoch1["label"])
  assert not np.array_equal(epoch0["label"], train["label"])


def test_train_is_deterministic_given_seed(digits_root):
  kw = dict(batch_size=32, view="binarized", data_dir=digits_root)
  a = _take(data.train_iterator("digits", seed=5, **kw), 3)
  b = _take(data.train_iterator("digits", seed=5, **kw, prefetch=0), 3)
  c = _take(data.train_iterator("digits", seed=6, **kw), 3)
  _assert_batches_equal(a, b)
  assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_dynamic_binarization(digits_root):
  kw = dict(batch_size=256, seed=1, data_dir=digits_root)
  bits = np.concatenate([b["image"] for b in _take(
      data.train_iterator("digits", view="binarized", **kw), 12)])
  raw = np.concatenate([b["image"] for b in _take(
      data.train_iterator("digits", view="8bit", **kw), 12)])
  assert set(np.unique(bits)) == {0, 1}
  assert np.all(bits[raw == 0] == 0) and np.all(bits[raw == 255] == 1)
  # ~2 epochs, ~200k pixels: the mean matches E[pixel / 255] to ~1e-3.
  assert bits.mean() == pytest.approx(raw.mean() / 255, abs=5e-3)
  middle = (raw > 96) & (raw < 160)
  assert bits[middle].mean() == pytest.approx(raw[middle].mean() / 255,
                                             abs=0.02)


def test_dynamic_binarization_is_fresh_each_epoch(digits_root):
  # Batches of the whole split (1497 examples): batch e is epoch e.
  kw = dict(batch_size=1497, seed=2, data_dir=digits_root, shard_index=0,
            shard_count=1)
  raw = _take(data.train_iterator("digits", view="8bit", **kw), 2)
  bits = _take(data.train_iterator("digits", view="binarized", **kw), 2)
  keys = [[im.tobytes() for im in b["image"]] for b in raw]
  assert sorted(keys[0]) == sorted(keys[1])
  for i, key in enumerate(keys[0][:50]):
    j = keys[1].index(key)
    assert not np.array_equal(bits[0]["image"][i], bits[1]["image"][j])


def test_iterator_state_round_trip(digits_root):
  for prefetch in (0, 4):
    kw = dict(batch_size=100, view="binarized", seed=7, data_dir=digits_root,
              prefetch=prefetch)
    it = data.train_iterator("digits", **kw)
    _take(it, 5)
    state = it.get_state()
    state = json.loads(json.dumps(state))  # A checkpointable plain value.
    expected = _take(it, 3)
    resumed = data.train_iterator("digits", **kw)
    resumed.set_state(state)
    _assert_batches_equal(_take(resumed, 3), expected)


def test_train_shards_are_disjoint_and_cover(digits_root):
  """Three hosts take disjoint rows of the same global batches as one host."""
  train = data.load_arrays("digits", "train", data_dir=digits_root)
  for view in ("binarized", "8bit"):  # 8bit last: its rows are checked below
    kw = dict(view=view, seed=0, data_dir=digits_root)
    # one global batch of 3 x 499 = 1497 examples is one epoch of the split
    one = _take(data.train_iterator("digits", batch_size=1497, shard_index=0,
                                    shard_count=1, **kw), 2)
    hosts = [_take(data.train_iterator("digits", batch_size=499, shard_index=k,
                                       shard_count=3, **kw), 2) for k in range(3)]
    for i in range(2):
      for key in ("image", "label"):
        np.testing.assert_array_equal(
            np.concatenate([h[i][key] for h in hosts]), one[i][key])
  rows = [_rows(h[0]["image"], h[0]["label"]) for h in hosts]
  assert sorted(sum(rows, [])) == _rows(train["image"], train["label"])
  assert rows[0] != rows[1]


# ----------------------------------------------------------------------------
# Evaluation batches.


def test_eval_batches_cover_each_example_once(digits_root):
  test = data.load_arrays("digits", "test", data_dir=digits_root)
  batches = data.eval_batches("digits", batch_size=64, view="8bit",
                              data_dir=digits_root)
  assert len(batches) == 5
  got = list(batches)
  assert [len(b["label"]) for b in got] == [64] * 5  # the last one padded
  assert [int(b["mask"].sum()) for b in got] == [64, 64, 64, 64, 44]
  assert set(got[0]) == {"image", "label", "mask"}
  assert got[0]["label"].dtype == np.int32 and got[0]["image"].dtype == np.uint8
  real = np.concatenate([b["mask"] for b in got])
  np.testing.assert_array_equal(np.concatenate([b["image"] for b in got])[real],
                                test["image"])
  np.testing.assert_array_equal(np.concatenate([b["label"] for b in got])[real],
                                test["label"])
  _assert_batches_equal(list(batches), got)  # Re-iterable.


def test_eval_shards_are_disjoint_and_cover(digits_root):
  """Three hosts get as many batches of one shape, rows of one host's batches."""
  one = list(data.eval_batches("digits", batch_size=96, view="binarized",
                               data_dir=digits_root, shard_index=0, shard_count=1))
  hosts = [list(data.eval_batches("digits", batch_size=32, view="binarized",
                                  data_dir=digits_root, shard_index=k,
                                  shard_count=3)) for k in range(3)]
  assert [len(h) for h in hosts] == [len(one)] * 3 == [4] * 3
  for j, batch in enumerate(one):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(
          np.concatenate([h[j][key] for h in hosts]), batch[key])
  assert [int(h[-1]["mask"].sum()) for h in hosts] == [12, 0, 0]  # 300 = 3 * 96 + 12


def test_eval_binarization_is_static(digits_root):
  def draw(batch_size, seed=0, **kw):
    batches = list(data.eval_batches("digits", batch_size=batch_size,
                                     view="binarized", seed=seed,
                                     data_dir=digits_root, **kw))
    return np.concatenate([b["image"][b["mask"]] for b in batches])

  test = data.load_arrays("digits", "test", data_dir=digits_root)
  a = draw(64)
  assert a.shape == test["image"].shape and set(np.unique(a)) == {0, 1}
  np.testing.assert_array_equal(a, draw(64))
  np.testing.assert_array_equal(a, draw(7))
  np.testing.assert_array_equal(a, draw(300))
  host1 = (np.arange(300) % 32) >= 16  # rows 16..31 of each global batch of 32
  np.testing.assert_array_equal(a[host1], draw(16, shard_index=1, shard_count=2))
  assert not np.array_equal(a, draw(64, seed=1))
  assert np.all(a[test["image"] == 0] == 0)
  assert np.all(a[test["image"] == 255] == 1)
  assert a.mean() == pytest.approx(test["image"].mean() / 255, abs=0.01)


# ----------------------------------------------------------------------------
# Dequantization.


def test_dequantize_range_and_inverse():
  x = np.tile(np.arange(256, dtype=np.uint8), 64).reshape(64, 16, 16, 1)
  y = jax.jit(data.dequantize)(x, jax.random.key(0))
  assert y.dtype == jnp.float32 and y.shape == x.shape
  y = np.asarray(y)
  assert y.min() >= 0.0 and y.max() < 1.0
  np.testing.assert_array_equal(np.floor(y * 256).astype(np.uint8), x)
  # The within-cube offset is uniform: mean ~ 1/2.
  assert (y * 256 - x).mean() == pytest.approx(0.5, abs=0.01)


def test_dequantize_clamps_at_top_of_cube(monkeypatch):
  almost_one = np.float32(np.nextafter(np.float32(1), np.float32(0)))
  monkeypatch.setattr(
      jax.random, "uniform",
      lambda key, shape, dtype: jnp.full(shape, almost_one, dtype))
  y = np.asarray(data.dequantize(np.array([0, 127, 255], np.uint8),
                                 jax.random.key(0)))
  assert y.max() < 1.0
  np.testing.assert_array_equal(np.floor(y * 256), [0, 127, 255])


def test_dequantize_binary():
  x = np.array([[0, 1], [1, 0]], np.uint8)
  y = np.asarray(data.dequantize(x, jax.random.key(1), num_bits=1))
  assert y.min() >= 0.0 and y.max() < 1.0
  np.testing.assert_array_equal(np.floor(y * 2), x)


def test_concurrent_preparation_happens_once(tmp_path):
  idx_dir = tmp_path / "idx"
  arrays = _fake_mnist(idx_dir, seed=1)
  root = tmp_path / "d"
  stderr, errors = io.StringIO(), []

  def prepare():
    try:
      data.source("mnist", "test", data_dir=root, mnist_dir=idx_dir)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  with contextlib.redirect_stderr(stderr):
    threads = [threading.Thread(target=prepare) for _ in range(3)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  assert not errors
  assert stderr.getvalue().count("preparing mnist") == 1
  got = data.load_arrays("mnist", "test", data_dir=root)
  np.testing.assert_array_equal(got["image"], arrays["test"]["image"])


def test_preparation_removes_what_a_killed_preparation_left(tmp_path):
  """TFDS prepares into ``incomplete.<random>_<version>/`` and renames it when
  done; a kill -9 leaves that folder, which the next preparation removes."""
  idx_dir = tmp_path / "idx"
  _fake_mnist(idx_dir, seed=2)
  root = tmp_path / "d"
  leftover = root / "genjax_mnist" / "incomplete.Q7X2KD_1.0.0"
  (leftover / "genjax_mnist-train.array_record-00000-of-00001").parent.mkdir(parents=True)
  (leftover / "genjax_mnist-train.array_record-00000-of-00001").write_bytes(b"cut")
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    data.source("mnist", "test", data_dir=root, mnist_dir=idx_dir)
  assert f"removing {leftover}, left by an interrupted preparation" in stderr.getvalue()
  assert sorted(p.name for p in (root / "genjax_mnist").iterdir()) == ["1.0.0"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):  # pylint: disable=arguments-differ
    del args


def test_mnist_download_through_tfds(tmp_path, monkeypatch):
  """The download path, served from a local HTTP server (gzipped files)."""
  serve_dir = tmp_path / "www"
  arrays = _fake_mnist(serve_dir, seed=2)
  for plain in serve_dir.glob("t10k-*-ubyte"):  # Serve only .gz, like GCS.
    plain.with_name(plain.name + ".gz").write_bytes(
        gzip.compress(plain.read_bytes()))
    plain.unlink()
  handler = functools.partial(_QuietHandler, directory=str(serve_dir))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    monkeypatch.delenv("GENJAX_MNIST_DIR", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(data.builders, "MNIST_URL",
                        f"http://127.0.0.1:{server.server_port}/")
    got = data.load_arrays("mnist", "test", data_dir=tmp_path / "d")
  finally:
    server.shutdown()
    server.server_close()
  np.testing.assert_array_equal(got["image"], arrays["test"]["image"])
  np.testing.assert_array_equal(got["label"], arrays["test"]["label"])
