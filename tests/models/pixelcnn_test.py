"""Tests of PixelCNN and Gated PixelCNN (genjax/models/pixelcnn.py, gated_pixelcnn.py)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import genjax
from genjax import train
from genjax.models import gated_pixelcnn
from genjax.models import pixelcnn

_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
FAMILIES = {"pixelcnn": pixelcnn, "gated_pixelcnn": gated_pixelcnn}


def _build(name, shape=(4, 4, 1), likelihood="bernoulli", **kw):
  cfg = dict(name=name, input_shape=shape, likelihood=likelihood, features=12,
             num_layers=2, first_kernel_size=3, kernel_size=3, output_features=8)
  cfg.update(kw)
  return FAMILIES[name].build(ml_collections.ConfigDict(cfg), jax.random.key(0))


def _batch(shape, likelihood, n=2, seed=0, num_classes=10):
  rng = np.random.default_rng(seed)
  high = 2 if likelihood == "bernoulli" else 256
  return {"image": jnp.asarray(rng.integers(0, high, (n, *shape)), jnp.uint8),
          "label": jnp.asarray(rng.integers(0, num_classes, (n,)), jnp.int32)}


def _call(fn, model, *args, static=(), **kwargs):
  """``fn(model, *args, **kwargs)`` under ``jax.jit`` of the split model."""
  graphdef, state = nnx.split(model)
  wrapped = _jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a, **kwargs))
  return wrapped(state, *args)


def _jacobian(model, shape, labels=None):
  """d (random projection of the logits at each sub-pixel) / d input: [HWC, HWC]."""
  extra = {} if labels is None else {"labels": labels}
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, *shape)), jnp.float32)

  def f(m, v):
    logits = m(v.reshape(1, *shape), **extra)
    if logits.ndim == 5:  # categorical: project the 256 logits
      logits = logits @ jnp.asarray(np.random.default_rng(2).normal(size=256), jnp.float32)
    return logits.reshape(-1)

  return np.asarray(_call(lambda m, v: jax.jacrev(lambda u: f(m, u))(v), model,
                          x.reshape(-1)))


def _order(shape):  # raster order of every sub-pixel (i, j, c)
  return list(itertools.product(*(range(s) for s in shape)))


def test_registered():
  assert genjax.models.get("pixelcnn") is pixelcnn
  assert genjax.models.get("gated_pixelcnn") is gated_pixelcnn


@pytest.mark.parametrize("name, shape, likelihood, classes", [
    ("pixelcnn", (4, 4, 1), "bernoulli", 0),
    ("pixelcnn", (4, 4, 3), "categorical", 0),
    ("gated_pixelcnn", (4, 4, 1), "bernoulli", 0),
    ("gated_pixelcnn", (4, 4, 3), "categorical", 3),
])
def test_causality_by_gradient(name, shape, likelihood, classes):
  """The conditional of sub-pixel t depends on no sub-pixel >= t, and on some < t."""
  kw = {"num_classes": classes} if classes else {}
  # wide enough that some unit of every colour group is active (relu) everywhere
  model = _build(name, shape, likelihood, features=24, output_features=24, **kw)
  jac = _jacobian(model, shape, jnp.array([1]) if classes else None)
  order = _order(shape)
  for t, (i, j, c) in enumerate(order):
    for s, (i2, j2, c2) in enumerate(order):
      allowed = (i2, j2) < (i, j) or ((i2, j2) == (i, j) and c2 < c)
      if not allowed:
        assert jac[t, s] == 0.0, ((i, j, c), (i2, j2, c2))
    if t > 0:
      assert np.any(jac[t, :t] != 0), (i, j, c)


def test_gated_pixelcnn_has_no_blind_spot_and_pixelcnn_has_one():
  shape = (5, 5, 1)
  gated = _build("gated_pixelcnn", shape, num_layers=4)
  jac = _jacobian(gated, shape)
  assert np.all(jac[-1, :-1] != 0)  # the last pixel sees every earlier pixel
  assert jac[2 * 5 + 1, 1 * 5 + 4] != 0  # (2, 1) sees (1, 4), three columns right
  plain = _build("pixelcnn", shape, num_layers=4)
  jac = _jacobian(plain, shape)
  assert jac[2 * 5 + 1, 1 * 5 + 4] == 0  # the blind spot: (2, 1) cannot see (1, 4)
  assert jac[2 * 5 + 1, 0 * 5 + 3] != 0  # though it sees (0, 3): r rows up, r columns right


@pytest.mark.parametrize("name, shape, likelihood, classes", [
    ("pixelcnn", (5, 4, 1), "bernoulli", 0),
    ("pixelcnn", (4, 4, 1), "categorical", 0),
    ("pixelcnn", (3, 4, 3), "categorical", 0),
    ("pixelcnn", (3, 3, 3), "bernoulli", 0),
    ("gated_pixelcnn", (5, 4, 1), "bernoulli", 0),
    ("gated_pixelcnn", (3, 4, 3), "categorical", 0),
    ("gated_pixelcnn", (4, 4, 1), "bernoulli", 10),
    ("gated_pixelcnn", (3, 3, 3), "categorical", 3),
])
def test_cached_sampling_equals_naive_sampling(name, shape, likelihood, classes):
  kw = {"num_classes": classes} if classes else {}
  model = _build(name, shape, likelihood, **kw)
  family = FAMILIES[name]
  graphdef, state = nnx.split(model)
  run = _jit(lambda s, k, method: family.sample(nnx.merge(graphdef, s), k, 3, method=method,
                                                temperature=0.9), static_argnums=2)
  key = jax.random.key(3)
  cached, naive = run(state, key, "cached"), run(state, key, "naive")
  assert cached.dtype == jnp.uint8 and cached.shape == (3, *shape)
  np.testing.assert_array_equal(cached, naive)
  assert int(cached.max()) <= (1 if likelihood == "bernoulli" else 255)
  assert len(np.unique(np.asarray(cached))) > 1
  assert not np.array_equal(cached, run(state, jax.random.key(4), "cached"))


@pytest.mark.parametrize("name, shape, likelihood", [
    ("pixelcnn", (3, 3, 3), "categorical"),
    ("gated_pixelcnn", (3, 4, 1), "bernoulli"),
])
def test_log_likelihood_is_the_sum_of_one_pixel_at_a_time_conditionals(name, shape,
                                                                       likelihood):
  """Each conditional recomputed on an image holding only the earlier sub-pixels."""
  model = _build(name, shape, likelihood)
  family = FAMILIES[name]
  batch = _batch(shape, likelihood)
  x = np.asarray(batch["image"])
  order = _order(shape)
  partial = np.zeros((len(order), *x.shape), np.uint8)  # [T, B, H, W, C]
  for t in range(len(order)):
    for s, (i, j, c) in enumerate(order[:t]):
      partial[t, :, i, j, c] = x[:, i, j, c]
  logits = _call(lambda m, p: family.conditionals(m, p.reshape(-1, *shape)), model,
                 jnp.asarray(partial))
  logits = np.asarray(logits).reshape(len(order), 2, *logits.shape[1:])
  total = np.zeros(2)
  for t, (i, j, c) in enumerate(order):
    lt = logits[t, :, i, j, c]
    if likelihood == "bernoulli":
      total += x[:, i, j, c] * lt - np.logaddexp(0, lt)
    else:
      total += (lt - np.logaddexp.reduce(lt, axis=-1, keepdims=True))[
          np.arange(2), x[:, i, j, c]]
  ll = _call(lambda m, b: family.log_likelihood(m, b, None), model, batch)
  np.testing.assert_allclose(ll, total, rtol=1e-5, atol=1e-4)
  loss, metrics = _call(lambda m, b: family.loss(m, b, jax.random.key(0)), model, batch)
  np.testing.assert_allclose(metrics["nll_nats"], -total.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"],
                             -total.mean() / (np.prod(shape) * np.log(2)), rtol=1e-5)
  assert loss == metrics["loss"]


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_a_tiny_model_overfits_a_tiny_batch(name):
  config = ml_collections.ConfigDict(dict(
      name=name, input_shape=(4, 4, 1), likelihood="bernoulli", features=16,
      num_layers=2, first_kernel_size=3, kernel_size=3, output_features=16))
  opt = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-2, schedule="constant"))
  family = FAMILIES[name]
  ts = train.create_train_state(family, config, opt, 100, jax.random.key(0))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(family, graphdef)
  batch = _batch((4, 4, 1), "bernoulli", n=4)
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0], losses


def test_class_conditioning_changes_the_likelihood_and_samples():
  model = _build("gated_pixelcnn", (4, 4, 1), num_classes=3)
  batch = _batch((4, 4, 1), "bernoulli", num_classes=3)
  ll = _call(lambda m, b: gated_pixelcnn.log_likelihood(m, b), model, batch)
  other = dict(batch, label=(batch["label"] + 1) % 3)
  assert np.all(ll != _call(lambda m, b: gated_pixelcnn.log_likelihood(m, b), model, other))
  with pytest.raises(ValueError, match="class-conditional"):
    gated_pixelcnn.conditionals(model, batch["image"])
  with pytest.raises(ValueError, match="needs batch\['label'\]"):
    gated_pixelcnn.loss(model, {"image": batch["image"]}, None)
  with pytest.raises(ValueError, match="PixelCNN is unconditional"):
    pixelcnn.conditionals(_build("pixelcnn"), batch["image"], batch["label"])
  with pytest.raises(ValueError, match="labels must be int"):
    gated_pixelcnn.sample(model, jax.random.key(0), 2, labels=jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="unconditional"):
    gated_pixelcnn.sample(_build("gated_pixelcnn"), jax.random.key(0), 2,
                          labels=jnp.zeros(2, jnp.int32))


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn"])
def test_bad_configs_and_inputs_are_clear_errors(name):
  family = FAMILIES[name]
  base = dict(name=name, input_shape=(4, 4, 1))
  for overrides, message in [
      ({"likelihood": "gaussian"}, "likelihood must be one of"),
      ({"kernel_size": 4}, "kernel_size must be odd"),
      ({"num_layers": 0}, "num_layers must be an int >= 1"),
      ({"input_shape": (4, 4)}, "input_shape must be"),
      ({"widht": 3}, "unknown field"),
      ({"input_shape": (4, 4, 3), "features": 2}, "at least the number of image channels"),
  ]:
    with pytest.raises(ValueError, match=message):
      family.build(ml_collections.ConfigDict({**base, **overrides}), jax.random.key(0))
  model = _build(name)
  with pytest.raises(ValueError, match=r"shape \(2, 5, 4, 1\)"):
    family.loss(model, {"image": jnp.zeros((2, 5, 4, 1), jnp.uint8)}, None)
  with pytest.raises(TypeError, match="dtype float32, expected uint8"):
    family.log_likelihood(model, {"image": jnp.zeros((2, 4, 4, 1))}, None)
  with pytest.raises(ValueError, match="method must be one of"):
    family.sample(model, jax.random.key(0), 2, method="fast")
  with pytest.raises(ValueError, match="temperature must be > 0"):
    family.sample(model, jax.random.key(0), 2, temperature=0.0)


def test_check_config_matches_likelihood_view_and_classes():
  from experiments.configs import gated_pixelcnn as configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config("smoke")
  config.model.input_shape = (8, 8, 1)
  gated_pixelcnn.check_config(config)
  config.data.view = "8bit"
  with pytest.raises(ValueError, match="likelihood='bernoulli' models binarized"):
    gated_pixelcnn.check_config(config)
  config.data.view = "binarized"
  config.model.num_classes = 7
  with pytest.raises(ValueError, match="digits has 10 classes"):
    gated_pixelcnn.check_config(config)
