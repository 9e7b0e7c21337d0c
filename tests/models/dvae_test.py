"""The image tokenizers: Gumbel-softmax relaxation, VQ straight-through and EMA codebook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check
from genjax import models

dvae = models.get("dvae")


def _model(quantizer="gumbel", shape=(8, 8, 1), **kw):
  cfg = dict(name="dvae", input_shape=shape, quantizer=quantizer, codebook_size=8,
             code_dim=4, channels=(8, 8), anneal_steps=10, **kw)
  return dvae.build(cfg, jax.random.key(0))


def _batch(n=4, shape=(8, 8, 1)):
  return {"image": np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)}


@pytest.fixture(scope="module")
def gumbel():
  return _model("gumbel")


@pytest.fixture(scope="module")
def vq():
  return _model("vq")


def test_token_grid_is_a_quarter_of_the_image_and_decodes_back_to_images(gumbel):
  mnist = nnx.eval_shape(lambda: _model(shape=(28, 28, 1)))
  assert mnist.grid_shape == (7, 7)
  assert gumbel.grid_shape == (2, 2)
  tokens = dvae.encode(gumbel, _batch()["image"])
  assert tokens.shape == (4, 2, 2) and tokens.dtype == jnp.int32
  assert int(tokens.min()) >= 0 and int(tokens.max()) < 8
  images = dvae.decode(gumbel, tokens)
  assert images.shape == (4, 8, 8, 1) and images.dtype == jnp.uint8


def test_relaxed_sample_tends_to_one_hot_as_the_temperature_falls(gumbel):
  logits = jax.random.normal(jax.random.key(1), (1000, 8))
  g = jax.random.gumbel(jax.random.key(2), logits.shape)
  peaks = [float(jax.nn.softmax((logits + g) / tau, -1).max(-1).mean())
           for tau in (1.0, 0.3, 0.1, 0.01)]
  assert peaks == sorted(peaks) and peaks[0] < 0.8 and peaks[-1] > 0.99
  np.testing.assert_allclose(float(dvae.temperature(gumbel, 0)), 1.0)
  np.testing.assert_allclose(float(dvae.temperature(gumbel, 10)), 1 / 16, rtol=1e-6)
  np.testing.assert_allclose(float(dvae.temperature(gumbel, 5)), 0.25, rtol=1e-6)


def test_bound_is_finite_and_below_zero_and_kl_is_nonnegative(gumbel, vq):
  for m in (gumbel, vq):
    ll = np.asarray(dvae.log_likelihood(m, _batch(), jax.random.key(0)))
    assert np.all(np.isfinite(ll)) and np.all(ll < 0)
    _, metrics = dvae.loss(m, _batch(), jax.random.key(0), 0.5)
    assert float(metrics.get("kl", 0.0)) >= 0.0


def test_vq_straight_through_gradients_reach_the_encoder_not_the_codebook(vq):
  m = vq
  grads = nnx.jit(nnx.grad(lambda mm: dvae.loss(mm, _batch(), jax.random.key(0))[0]))(m)
  enc = jax.tree.leaves(grads["stem"]) + jax.tree.leaves(grads["enc_out"])
  assert all(np.isfinite(np.asarray(g)).all() for g in enc)
  assert sum(float(jnp.abs(g).sum()) for g in enc) > 0
  assert isinstance(m.codebook, dvae.Codebook)  # not a Param: no gradient, EMA only
  assert "codebook" not in grads and "stem" in grads


def test_ema_codebook_update_on_a_hand_example():
  m = _model("vq", ema_decay=0.5, dead_threshold=0.3)
  m.codebook_size, m.code_dim = 2, 1
  m.codebook = dvae.Codebook(jnp.array([[0.0], [10.0]]))
  m.ema_count = dvae.Codebook(jnp.array([1.0, 0.5]))
  m.ema_sum = dvae.Codebook(jnp.array([[0.0], [5.0]]))
  z = jnp.array([[2.0], [4.0], [6.0]]).reshape(1, 3, 1, 1)
  codes = jnp.array([0, 0, 0]).reshape(1, 3, 1)
  dvae.ema_update(m, z, codes, jax.random.key(0))
  # count_0 = 0.5 * 1 + 0.5 * 3 = 2, sum_0 = 0.5 * 0 + 0.5 * 12 = 6, code_0 ~ 6 / 2 = 3
  np.testing.assert_allclose(np.asarray(m.ema_count[...])[0], 2.0)
  np.testing.assert_allclose(np.asarray(m.ema_sum[...])[0], [6.0])
  np.testing.assert_allclose(np.asarray(m.codebook[...])[0], [3.0], rtol=1e-4)
  # code 1: count 0.5 * 0.5 = 0.25 < 0.3 -> dead: restarted at one of the batch's vectors
  assert float(m.ema_count[...][1]) == 1.0
  assert float(m.codebook[...][1, 0]) in (2.0, 4.0, 6.0)


def test_eval_summary_gives_perplexity_and_usage_of_the_codes():
  out = dvae.eval_summary({"code_counts": np.array([5.0, 5.0, 0.0, 0.0])})
  assert out["codebook_perplexity"] == pytest.approx(2.0)
  assert out["codebook_usage"] == pytest.approx(0.5)


@pytest.mark.parametrize("quantizer", ["gumbel", "vq"])
def test_bfloat16_computes_the_convolutions_in_bfloat16_and_the_codes_in_float32(quantizer):
  """``dtype="bfloat16"``: the encoder's and decoder's convolutions are bfloat16; the
  codebook products (relaxed codes times the codebook, nearest-code distances),
  parameters, loss and bound float32, close to float32's."""
  mixed_precision.check_bfloat16(
      dvae, lambda dtype: _model(quantizer, dtype=dtype), _batch(),
      float32_ok=lambda op: op[0] == "dot_general")
