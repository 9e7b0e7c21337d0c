"""The feature network of the sample metrics: a small MNIST classifier genjax trains.

FID, KID and precision/recall compare distributions of features. Papers use the
pool features of an Inception network trained on ImageNet; genjax has no such
network offline, so it trains its own small MNIST classifier with a fixed recipe
and seed and uses its penultimate layer (128 ReLU units) as the feature space of
28x28x1 images. Numbers computed with it are comparable across genjax models and
runs, not with Inception-based FIDs in papers.

The recipe (`RECIPE`): a 3x3 conv stack 32 -> 64 (stride 2) -> 128 (stride 2),
a dense layer of 128 units (the features) and a linear read-out to 10 classes;
Adam, learning rate 1e-3 with cosine decay, batch 64, 3 epochs of the 60,000
8-bit MNIST training images scaled to [0, 1], seed 0, no augmentation.
Measured (2-core AMD EPYC CPU shared with another training job, run at nice
19, jax 0.10.2): test accuracy 99.19% after 163 s of training (2,811 steps);
rerun on a less loaded CPU: 99.19% again, in 67 s.
(Batch 128 gave 99.01% in 3 epochs and 99.08% in 5.) The result is
deterministic on one platform; other platforms may differ in the last digit.

The trained network is cached under ``genjax.data.data_dir()`` in
``feature_networks/<name>/`` after its first use (training takes minutes on a
CPU); later calls load it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genjax import fileio
from genjax import nn

MNIST_SHAPE = (28, 28, 1)
_FILE = "params.npz"
_INFO = "info.json"


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a feature classifier is trained (fixed: its results are the cache key)."""
  name: str = "mnist_classifier_v1"
  dataset: str = "mnist"
  channels: tuple[int, ...] = (32, 64, 128)
  features: int = 128
  epochs: float = 3.0
  batch_size: int = 64
  learning_rate: float = 1e-3
  seed: int = 0


RECIPE = Recipe()


class Classifier(nnx.Module):
  """Conv stack, a dense feature layer and a linear read-out (`Recipe` sizes)."""

  def __init__(self, input_shape, channels, num_features, num_classes, *,
               rngs: nnx.Rngs):
    h, w, c = input_shape
    ins = (c, *channels[:-1])
    self.convs = nnx.List([nn.conv(i, o, 3, strides=1 if j == 0 else 2, rngs=rngs)
                           for j, (i, o) in enumerate(zip(ins, channels))])
    n = len(channels) - 1
    flat = nn.downsampled_size(h, n) * nn.downsampled_size(w, n) * channels[-1]
    self.dense = nn.linear(flat, num_features, rngs=rngs)
    self.out = nn.linear(num_features, num_classes, rngs=rngs)

  def features(self, x_BxHxWxC: jax.Array) -> jax.Array:
    """Penultimate features ``float32[B, F]`` of images scaled to [0, 1]."""
    h = x_BxHxWxC
    for conv in self.convs:
      h = jax.nn.relu(conv(h))
    return jax.nn.relu(self.dense(h.reshape(h.shape[0], -1)))

  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    return self.out(self.features(x_BxHxWxC))


def build(recipe: Recipe = RECIPE, key: jax.Array | None = None,
          input_shape=MNIST_SHAPE) -> Classifier:
  """An untrained classifier of ``recipe`` (random init from ``key``, default its seed)."""
  key = jax.random.key(recipe.seed) if key is None else key
  return Classifier(input_shape, recipe.channels, recipe.features, 10,
                    rngs=nnx.Rngs(params=key))


def _scale(images_uint8) -> jax.Array:
  return jnp.asarray(images_uint8, jnp.float32) / 255.0


@functools.partial(jax.jit, static_argnums=0)
def _features_jit(graphdef, state, images_BxHxWxC):
  return nnx.merge(graphdef, state).features(_scale(images_BxHxWxC))


@functools.partial(jax.jit, static_argnums=0)
def _logits_jit(graphdef, state, images_BxHxWxC):
  return nnx.merge(graphdef, state)(_scale(images_BxHxWxC))


def _batched(fn, model: Classifier, images, batch_size: int) -> np.ndarray:
  """``fn`` over ``images`` in batches of one compiled shape (the last is padded)."""
  images = np.asarray(images)
  n = images.shape[0]
  if n == 0:
    raise ValueError("no images given")
  graphdef, state = nnx.split(model)
  size = min(batch_size, n)
  out = []
  # full float32 products on every backend (not TF32 or bfloat16 passes), so metrics
  # computed on a GPU or TPU match the CPU's
  with jax.default_matmul_precision("highest"):
    for start in range(0, n, size):
      chunk = images[start:start + size]
      pad = size - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
      out.append(np.asarray(fn(graphdef, state, chunk))[:size - pad])
  return np.concatenate(out)


def features(model: Classifier, images_NxHxWxC, batch_size: int = 500) -> np.ndarray:
  """Penultimate features ``float32[N, F]`` of uint8 images (0..255), under jax.jit."""
  return _batched(_features_jit, model, images_NxHxWxC, batch_size)


def logits(model: Classifier, images_NxHxWxC, batch_size: int = 500) -> np.ndarray:
  """Class logits ``float32[N, 10]`` of uint8 images (0..255), under jax.jit."""
  return _batched(_logits_jit, model, images_NxHxWxC, batch_size)


def accuracy(model: Classifier, images, labels, batch_size: int = 500) -> float:
  """The fraction of ``images`` (uint8 0..255) classified as ``labels``."""
  return float(np.mean(logits(model, images, batch_size).argmax(-1) == np.asarray(labels)))


def train(recipe: Recipe = RECIPE, *, data_dir=None, mnist_dir=None,
          log: bool = True) -> tuple[Classifier, dict]:
  """Trains the classifier of ``recipe`` on 8-bit MNIST (deterministic given the seed).

  Args:
    recipe: the architecture and training recipe.
    data_dir: where prepared data lives (``genjax.data.data_dir``).
    mnist_dir: the MNIST IDX files if MNIST is not prepared yet.
    log: print progress to stderr.

  Returns:
    ``(model, info)`` with ``info`` holding the test accuracy and the seconds
    of training.
  """
  from genjax import data as data_lib  # pylint: disable=g-import-not-at-top
  train_set = data_lib.load_arrays(recipe.dataset, "train", data_dir=data_dir,
                                   mnist_dir=mnist_dir)
  test_set = data_lib.load_arrays(recipe.dataset, "test", data_dir=data_dir,
                                  mnist_dir=mnist_dir)
  model = build(recipe)
  n = len(train_set["label"])
  steps_per_epoch = n // recipe.batch_size
  total = max(1, int(round(recipe.epochs * steps_per_epoch)))
  tx = optax.adam(optax.cosine_decay_schedule(recipe.learning_rate, total))
  graphdef, params = nnx.split(model)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x_BxHxWxC, y_B):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(_scale(x_BxHxWxC))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_B).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(recipe.seed)
  t0 = time.time()
  order = np.empty(0, np.int64)
  for i in range(total):
    if len(order) < recipe.batch_size:
      order = rng.permutation(n)
    idx, order = order[:recipe.batch_size], order[recipe.batch_size:]
    params, opt_state, loss = step(params, opt_state, train_set["image"][idx],
                                   train_set["label"][idx])
    if log and ((i + 1) % 200 == 0 or i + 1 == total):
      print(f"genjax.metrics: classifier step {i + 1}/{total}, loss {float(loss):.4f}, "
            f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
  seconds = time.time() - t0
  model = nnx.merge(graphdef, params)
  acc = accuracy(model, test_set["image"], test_set["label"])
  info = {"recipe": dataclasses.asdict(recipe), "test_accuracy": acc,
          "train_seconds": seconds, "steps": total,
          "device": jax.devices()[0].device_kind}
  if log:
    print(f"genjax.metrics: {recipe.name} test accuracy {acc:.4f} after {seconds:.0f} s",
          file=sys.stderr, flush=True)
  return model, info


def save(model: Classifier, info: dict, directory: str | os.PathLike[str]) -> None:
  """Writes the parameters and ``info`` under ``directory`` (atomically)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  text = json.dumps(info, indent=2) + "\n"
  # The parameters last: a reader that finds them finds their info too.
  fileio.write_atomically(directory / _INFO, lambda tmp: tmp.write_text(text))
  fileio.write_atomically(directory / _FILE,
                          lambda tmp: np.savez(tmp, *[np.asarray(x) for x in leaves]))


def load(directory: str | os.PathLike[str], recipe: Recipe = RECIPE
         ) -> tuple[Classifier, dict]:
  """Reads a classifier written by `save`."""
  directory = pathlib.Path(directory)
  model = build(recipe)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  with np.load(directory / _FILE) as f:
    arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
  leaves, treedef = jax.tree.flatten(params)
  if [a.shape for a in arrays] != [x.shape for x in leaves]:
    raise ValueError(f"{directory} holds a classifier of another architecture; "
                     "delete it to retrain")
  params = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays])
  info = json.loads((directory / _INFO).read_text())
  if info.get("recipe") != json.loads(json.dumps(dataclasses.asdict(recipe))):
    raise ValueError(f"{directory} holds a classifier trained with another recipe "
                     f"({info.get('recipe')}); delete the directory to retrain it")
  return nnx.merge(graphdef, params, rest), info


@functools.lru_cache(maxsize=4)
def _cached(directory: pathlib.Path, recipe: Recipe, mnist_dir) -> tuple[Classifier, dict]:
  from genjax.data import pipeline  # pylint: disable=g-import-not-at-top
  if not (directory / _FILE).is_file():
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory.parent / f".{recipe.name}.lock"
    with pipeline._file_lock(lock):  # pylint: disable=protected-access
      if not (directory / _FILE).is_file():  # another process may have done it
        print(f"genjax.metrics: training the {recipe.name} feature network once "
              f"(a few CPU minutes); it is cached in {directory}", file=sys.stderr,
              flush=True)
        model, info = train(recipe, data_dir=directory.parent.parent, mnist_dir=mnist_dir)
        save(model, info, directory)
  return load(directory, recipe)


def feature_network(input_shape, *, data_dir=None, mnist_dir=None,
                    recipe: Recipe = RECIPE) -> Classifier:
  """The trained feature network for images of ``input_shape``, trained on first use.

  Args:
    input_shape: ``(H, W, C)`` of the images; genjax has a network for
      ``(28, 28, 1)`` (MNIST-shaped data) only.
    data_dir: the prepared-data cache (default ``genjax.data.data_dir()``);
      the network is cached in ``<data_dir>/feature_networks/<recipe.name>``.
    mnist_dir: the MNIST IDX files, if MNIST is not prepared yet.
    recipe: the training recipe (the cache key is its name).

  Returns:
    The trained `Classifier`.

  Raises:
    ValueError: for shapes with no feature network.
  """
  if not has_feature_network(input_shape):
    raise ValueError(
        f"genjax has no feature network for images of shape {tuple(input_shape)}: "
        f"FID, KID and precision/recall are defined for {MNIST_SHAPE} (MNIST-shaped) "
        "images only; pass features ([N, F] arrays) to compare other data")
  from genjax.data import pipeline  # pylint: disable=g-import-not-at-top
  root = pipeline.data_dir(data_dir)
  return _cached(root / "feature_networks" / recipe.name, recipe, mnist_dir)[0]


def has_feature_network(input_shape) -> bool:
  """Whether `feature_network` exists for images of ``input_shape``."""
  return tuple(input_shape) == MNIST_SHAPE and math.prod(input_shape) > 0
