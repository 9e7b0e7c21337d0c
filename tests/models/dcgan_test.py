"""DCGAN: shapes, the two-player step, the penalties, the EMA and spectral norm."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from genjax import models
from genjax import train
from genjax.models import dcgan
from genjax.nn import spectral

import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check

SHAPE = (8, 8, 1)


def _config(**kw):
  c = dict(name="dcgan", input_shape=SHAPE, latent_dim=4, g_channels=(8, 16),
           d_channels=(8, 16), ema_decay=0.9)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def _opt(g_lr=1e-2, d_lr=1e-2):
  return ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0, b1=0.5,
      generator=dict(learning_rate=g_lr), discriminator=dict(learning_rate=d_lr)))


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
          "label": rng.integers(0, 10, (n,), dtype=np.int32)}


def _params(module, kind=nnx.Param):
  return [np.array(x) for x in jax.tree.leaves(nnx.state(module, kind))]


def _one_step(config, opt, batch=None):
  """One compiled train step; returns (state before, state after, metrics)."""
  ts = train.create_train_state(dcgan, config, opt, 10, jax.random.key(0))
  before = jax.tree.map(lambda x: np.array(x, copy=True), nnx.state(ts))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(dcgan, graphdef)
  state, metrics = step(state, batch or _batch(), jax.random.key(1))
  return nnx.merge(graphdef, before), nnx.merge(graphdef, state), jax.device_get(metrics)


def test_registered_and_shapes():
  assert models.get("dcgan") is dcgan
  model = dcgan.build(_config(input_shape=(7, 7, 1), g_norm="none"), jax.random.key(0))
  x = dcgan.sample(model, jax.random.key(1), 5)
  assert x.shape == (5, 7, 7, 1) and x.dtype == jnp.uint8
  d = model.discriminator(jnp.zeros((3, 7, 7, 1)))
  assert d.shape == (3,)


def test_conditional_sample_and_projection():
  model = dcgan.build(_config(num_classes=10, spectral_norm=True), jax.random.key(0))
  x = dcgan.sample(model, jax.random.key(1), 4, labels=jnp.array([0, 1, 2, 3]))
  assert x.shape == (4, *SHAPE)
  xs = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, *SHAPE)), jnp.float32)
  a = model.discriminator(xs, jnp.array([0, 0]))
  b = model.discriminator(xs, jnp.array([1, 1]))
  assert not np.allclose(a, b)  # the projection term depends on the label


def test_log_likelihood_raises_with_a_reason():
  model = dcgan.build(_config(), jax.random.key(0))
  with pytest.raises(NotImplementedError, match="GAN defines no likelihood"):
    dcgan.log_likelihood(model, _batch(), jax.random.key(0))


@pytest.mark.parametrize("field, value, message", [
    ("loss", "lsgan", "one of 'non_saturating'"),
    ("d_steps", 0, "d_steps must be an int >= 1"),
    ("ema_decay", 1.0, "ema_decay must be in"),
    ("g_chanels", (8,), "unknown field"),
])
def test_bad_config_is_a_clear_error(field, value, message):
  with pytest.raises(ValueError, match=message):
    dcgan.build(_config(**{field: value}), jax.random.key(0))


def test_gradient_penalty_matches_finite_differences():
  model = dcgan.build(_config(input_shape=(4, 4, 1), d_channels=(4,)), jax.random.key(0))
  rng = np.random.default_rng(0)
  real = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 1)), jnp.float32)
  fake = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 1)), jnp.float32)
  key = jax.random.key(3)
  got = float(dcgan.gradient_penalty(model.discriminator, real, fake, None, key))
  eps = np.asarray(jax.random.uniform(key, (2,)))[:, None, None, None]
  x_hat = np.asarray(eps * real + (1 - eps) * fake, np.float64)
  d = lambda x: np.asarray(model.discriminator(jnp.asarray(x, jnp.float32)), np.float64)
  h, grads = 1e-2, np.zeros_like(x_hat)
  for idx in np.ndindex(*x_hat.shape[1:]):
    e = np.zeros_like(x_hat)
    e[(slice(None), *idx)] = h
    grads[(slice(None), *idx)] = (d(x_hat + e) - d(x_hat - e)) / (2 * h)
  norms = np.sqrt((grads.reshape(2, -1) ** 2).sum(-1))
  assert got == pytest.approx(np.mean((norms - 1.0) ** 2), rel=2e-3, abs=1e-5)


def test_r1_penalty_is_the_squared_input_gradient():
  model = dcgan.build(_config(), jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, *SHAPE)), jnp.float32)
  g = jax.vmap(jax.grad(lambda xi: model.discriminator(xi[None])[0]))(x)
  want = float(jnp.mean(jnp.sum(g.reshape(3, -1) ** 2, -1)))
  got = float(dcgan.r1_penalty(model.discriminator, x, None))
  assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wgan_gp"])
def test_one_step_updates_both_players_and_the_ema_exactly(loss):
  config = _config(loss=loss, d_steps=2 if loss == "wgan_gp" else 1,
                   r1_weight=1.0 if loss == "hinge" else 0.0,
                   spectral_norm=loss == "hinge")
  before, after, m = _one_step(config, _opt())
  for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"):
    assert np.isfinite(m[k]), k
  assert m["finite"] == 1.0 and m["d_grad_norm"] > 0 and m["g_grad_norm"] > 0
  if loss == "wgan_gp":
    assert m["gp"] >= 0
  for player in ("generator", "discriminator"):
    old, new = _params(getattr(before.model, player)), _params(getattr(after.model, player))
    assert all(not np.allclose(a, b) for a, b in zip(old, new) if a.ndim > 1), player
  # each optimizer counted its own updates: d_steps for D, one for G
  counts = {p: int(after.opt[p].step[...]) for p in ("generator", "discriminator")}
  assert counts == {"generator": 1, "discriminator": config.d_steps}
  # ema <- d * ema + (1 - d) * new generator, exactly, d = min(0.9, (1 + 1) / (10 + 1))
  d = min(0.9, 2.0 / 11.0)
  ema_old = _params(before.model.ema_generator, dcgan.EMAWeight)
  ema_new = _params(after.model.ema_generator, dcgan.EMAWeight)
  for e0, e1, g in zip(ema_old, ema_new, _params(after.model.generator), strict=True):
    np.testing.assert_allclose(e1, d * e0 + (1 - d) * g, rtol=1e-6, atol=1e-6)
  assert int(after.step[...]) == 1


def test_ema_decay_warms_up_to_the_configured_decay():
  model = dcgan.build(_config(ema_decay=0.999), jax.random.key(0))
  got = [float(dcgan.ema_decay_at(model, t)) for t in (1, 10, 1000, 10**6)]
  np.testing.assert_allclose(got, [2 / 11, 11 / 20, 1001 / 1010, 0.999], rtol=1e-6)
  flat = dcgan.build(_config(ema_decay=0.999, ema_warmup=False), jax.random.key(0))
  assert float(dcgan.ema_decay_at(flat, 1)) == pytest.approx(0.999)


@pytest.mark.parametrize("frozen", ["generator", "discriminator"])
def test_each_player_moves_only_through_its_own_optimizer(frozen):
  """A zero learning rate for one player freezes it while the other one moves."""
  lrs = {"g_lr": 0.0 if frozen == "generator" else 1e-2,
         "d_lr": 0.0 if frozen == "discriminator" else 1e-2}
  before, after, _ = _one_step(_config(), _opt(**lrs))
  moving = "discriminator" if frozen == "generator" else "generator"
  old, new = _params(getattr(before.model, frozen)), _params(getattr(after.model, frozen))
  for a, b in zip(old, new, strict=True):
    np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b) for a, b in zip(
      _params(getattr(before.model, moving)), _params(getattr(after.model, moving))))


def test_spectral_norm_estimates_the_largest_singular_value():
  layer = spectral.SpectralNorm(nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  spectral.power_iteration(layer, num_steps=50)
  w = np.asarray(layer.layer.kernel[...]).reshape(-1, 5)
  assert float(layer.sigma()) == pytest.approx(np.linalg.svd(w, compute_uv=False)[0],
                                               rel=1e-4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)), jnp.float32)
  plain = nnx.Conv(3, 5, (3, 3), rngs=nnx.Rngs(0))
  plain.kernel[...] = plain.kernel[...] / layer.sigma()
  np.testing.assert_allclose(layer(x), plain(x), rtol=1e-5, atol=1e-6)


def test_bfloat16_computes_both_players_in_bfloat16_with_float32_losses():
  """``dtype="bfloat16"``: both players' products and convolutions are bfloat16; the
  parameters and both losses float32, close to float32's."""
  mixed_precision.check_bfloat16(
      dcgan, lambda dtype: dcgan.build(_config(dtype=dtype), jax.random.key(0)), _batch())
