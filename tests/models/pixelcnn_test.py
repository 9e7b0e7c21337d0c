"""Tests of PixelCNN and Gated PixelCNN (genjax/models/pixelcnn.py, gated_pixelcnn.py)."""

from __future__ import annotations

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

import pixel_testing  # tests/models/pixel_testing.py, shared with pixelrnn_test
from pixel_testing import call as _call
from pixel_testing import jacobian as _jacobian
from pixel_testing import jit as _jit
import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check

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
  pixel_testing.assert_causal(_jacobian(model, shape, jnp.array([1]) if classes else None),
                              shape)


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
    # each family once per likelihood, grey and colour, non-square, conditional
    ("pixelcnn", (5, 4, 1), "bernoulli", 0),
    ("pixelcnn", (3, 4, 3), "categorical", 0),
    ("gated_pixelcnn", (4, 4, 1), "bernoulli", 10),
    ("gated_pixelcnn", (3, 4, 3), "categorical", 3),
])
def test_cached_sampling_equals_naive_sampling(name, shape, likelihood, classes):
  kw = {"num_classes": classes} if classes else {}
  pixel_testing.check_cached_sampling_equals_naive(
      FAMILIES[name].sample, _build(name, shape, likelihood, **kw), 3,
      1 if likelihood == "bernoulli" else 255)


@pytest.mark.parametrize("name, shape, likelihood", [
    ("pixelcnn", (3, 3, 3), "categorical"),
    ("gated_pixelcnn", (3, 4, 1), "bernoulli"),
])
def test_log_likelihood_is_the_sum_of_one_pixel_at_a_time_conditionals(name, shape,
                                                                       likelihood):
  """Each conditional recomputed on an image holding only the earlier sub-pixels."""
  pixel_testing.check_log_likelihood_one_pixel_at_a_time(
      FAMILIES[name], _build(name, shape, likelihood), _batch(shape, likelihood), likelihood)


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


@pytest.mark.parametrize("name, shape, likelihood, classes", [
    ("pixelcnn", (4, 4, 3), "categorical", 0),
    ("gated_pixelcnn", (4, 4, 1), "bernoulli", 10),
])
def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_likelihood(
    name, shape, likelihood, classes):
  """``dtype="bfloat16"``: every layer's product or convolution is bfloat16; parameters,
  loss and log-likelihood float32 (the softmax too), close to float32's."""
  kw = {"num_classes": classes} if classes else {}
  mixed_precision.check_bfloat16(
      FAMILIES[name], lambda dtype: _build(name, shape, likelihood, dtype=dtype, **kw),
      _batch(shape, likelihood))
