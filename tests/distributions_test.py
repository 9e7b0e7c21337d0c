"""Tests of genjax.distributions: normalisation, reference formulas, sampling."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from genjax import distributions as dist

# Compiled once per shape: much faster than op-by-op dispatch on a CPU.
_log_prob = jax.jit(dist.discretized_logistic_mixture_log_prob,
                    static_argnames=("num_bits", "min_log_scale"))
_sample = jax.jit(dist.discretized_logistic_mixture_sample,
                  static_argnames=("num_bits", "min_log_scale"))


def _mixture_log_probs(logit_probs, means, log_scales, num_bits=8):
  """log P(v) for every value v, broadcasting the parameters [..., K] to [V, ..., K]."""
  values = jnp.arange(2 ** num_bits).reshape((-1,) + (1,) * (means.ndim - 1))
  return _log_prob(
      values, logit_probs, means, log_scales, num_bits=num_bits)


@pytest.mark.parametrize("num_bits", [8, 5])
def test_discretized_logistic_mixture_sums_to_one_random_params(num_bits):
  rng = np.random.default_rng(0)
  shape = (64, 5)
  logit_probs = jnp.asarray(rng.normal(size=shape) * 3, jnp.float32)
  means = jnp.asarray(rng.uniform(-1.5, 1.5, size=shape), jnp.float32)
  log_scales = jnp.asarray(rng.uniform(-7.0, 2.0, size=shape), jnp.float32)
  lp_VxN = _mixture_log_probs(logit_probs, means, log_scales, num_bits)
  assert lp_VxN.shape == (2 ** num_bits, 64)
  assert np.all(np.isfinite(lp_VxN))
  np.testing.assert_allclose(jax.nn.logsumexp(lp_VxN, axis=0), 0.0, atol=2e-5)


@jax.jit
def _grad_total(means, log_scales):
  return jax.grad(lambda m, s: _mixture_log_probs(jnp.zeros_like(m), m, s).sum(),
                  argnums=(0, 1))(means, log_scales)


@pytest.mark.parametrize("mean,log_scale", [
    (0.0, -20.0), (0.5, -7.0), (0.999, -7.0), (-1.0, -7.0), (1.0, -12.0),
    (0.0, 5.0), (0.0, 50.0), (0.0, 100.0), (1e4, 0.0), (-1e4, -3.0), (3.0, -7.0),
])
def test_discretized_logistic_sums_to_one_extreme_params(mean, log_scale):
  shape = (1, 1)
  lp_V = _mixture_log_probs(jnp.zeros(shape), jnp.full(shape, mean),
                            jnp.full(shape, log_scale))[:, 0]
  assert np.all(np.isfinite(lp_V))
  np.testing.assert_allclose(jax.nn.logsumexp(lp_V), 0.0, atol=1e-4)
  grads = _grad_total(jnp.full(shape, mean), jnp.full(shape, log_scale))
  assert all(np.all(np.isfinite(g)) for g in grads)


def test_discretized_logistic_matches_naive_cdf_difference():
  rng = np.random.default_rng(1)
  means = rng.uniform(-1, 1, size=(20, 1))
  log_scales = rng.uniform(-4, 0, size=(20, 1))
  x = rng.integers(0, 256, size=(20,))
  got = _log_prob(
      x, jnp.zeros((20, 1)), jnp.asarray(means, jnp.float32),
      jnp.asarray(log_scales, jnp.float32))
  centre = x / 127.5 - 1.0
  s = np.exp(log_scales[:, 0])
  upper = np.where(x == 255, np.inf, centre + 1 / 255)
  lower = np.where(x == 0, -np.inf, centre - 1 / 255)
  logistic = stats.logistic(means[:, 0], s)
  # The difference of CDFs in the left half, of survival functions in the right.
  want = np.log(np.where(centre < means[:, 0],
                         logistic.cdf(upper) - logistic.cdf(lower),
                         logistic.sf(lower) - logistic.sf(upper)))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_discretized_logistic_mixture_weights():
  """A mixture is the weighted sum of its components' probabilities."""
  x = jnp.arange(256)[:, None]
  means = jnp.array([[-0.5, 0.3]])
  log_scales = jnp.array([[-2.0, -3.0]])
  logit_probs = jnp.log(jnp.array([[0.25, 0.75]]))
  mix = jnp.exp(_log_prob(x, logit_probs, means, log_scales))
  one = [jnp.exp(_log_prob(
      x, jnp.zeros((1, 1)), means[:, k:k + 1], log_scales[:, k:k + 1])) for k in range(2)]
  np.testing.assert_allclose(mix, 0.25 * one[0] + 0.75 * one[1], atol=1e-6)


def test_discretized_logistic_sampling_frequencies():
  n = 40_000
  logit_probs = jnp.log(jnp.array([0.3, 0.7]))
  means = jnp.array([-0.6, 0.4])
  log_scales = jnp.array([-1.5, -2.5])
  draws = _sample(
      jax.random.key(0), jnp.broadcast_to(logit_probs, (n, 2)),
      jnp.broadcast_to(means, (n, 2)), jnp.broadcast_to(log_scales, (n, 2)))
  assert draws.shape == (n,) and draws.dtype == jnp.int32
  freq = np.bincount(np.asarray(draws), minlength=256) / n
  probs = np.exp(np.asarray(_mixture_log_probs(logit_probs, means, log_scales)))
  se = np.sqrt(probs * (1 - probs) / n)
  assert np.all(np.abs(freq - probs) <= 5 * se + 1e-4)
  # The edge bins carry the tails.
  edges = _sample(
      jax.random.key(1), jnp.zeros((1000, 1)), jnp.full((1000, 1), 5.0), jnp.zeros((1000, 1)))
  assert int(edges.min()) >= 0 and int(edges.max()) == 255


def test_bernoulli_log_prob_matches_naive_formula():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(100,)) * 4
  x = rng.integers(0, 2, size=(100,))
  p = 1 / (1 + np.exp(-logits))
  want = x * np.log(p) + (1 - x) * np.log(1 - p)
  got = dist.bernoulli_log_prob(jnp.asarray(logits, jnp.float32), jnp.asarray(x, jnp.uint8))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bernoulli_log_prob_is_stable_for_large_logits():
  logits = jnp.array([200.0, 200.0, -200.0, -200.0])
  x = jnp.array([1, 0, 1, 0])
  np.testing.assert_allclose(dist.bernoulli_log_prob(logits, x), [0.0, -200.0, -200.0, 0.0],
                             atol=1e-6)


def test_gaussian_log_prob_matches_scipy():
  rng = np.random.default_rng(3)
  x, mean = rng.normal(size=(2, 50))
  log_var = rng.uniform(-3, 3, size=50)
  got = dist.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_var))
  want = stats.norm.logpdf(x, mean, np.exp(0.5 * log_var))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dist.standard_normal_log_prob(jnp.asarray(x)),
                             stats.norm.logpdf(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mean,log_var", [(0.0, 0.0), (1.5, -1.0), (-0.7, 1.2)])
def test_gaussian_kl_matches_numerical_integral(mean, log_var):
  q = stats.norm(mean, math.exp(0.5 * log_var))
  want, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z)),
                           -30, 30, points=[mean])
  got = float(dist.gaussian_kl_standard_normal(jnp.float32(mean), jnp.float32(log_var)))
  assert got == pytest.approx(want, abs=1e-5)
