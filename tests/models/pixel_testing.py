"""Checks shared by the tests of the autoregressive pixel models (not a test module)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

FAST_COMPILE = {"xla_backend_optimization_level": 0}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)


def call(fn, model, *args, **kwargs):
  """``fn(model, *args, **kwargs)`` under ``jax.jit`` of the split model."""
  graphdef, state = nnx.split(model)
  wrapped = jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a, **kwargs))
  return wrapped(state, *args)


def jacobian(model, shape, labels=None):
  """d (random projection of the logits at each sub-pixel) / d input: [HWC, HWC]."""
  extra = {} if labels is None else {"labels": labels}
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, *shape)), jnp.float32)

  def f(m, v):
    logits = m(v.reshape(1, *shape), **extra)
    if logits.ndim == 5:  # categorical: project the 256 logits
      logits = logits @ jnp.asarray(np.random.default_rng(2).normal(size=256), jnp.float32)
    return logits.reshape(-1)

  return np.asarray(call(lambda m, v: jax.jacrev(lambda u: f(m, u))(v), model,
                         x.reshape(-1)))


def raster_order(shape):
  """Every sub-pixel ``(i, j, c)`` in generation order."""
  return list(itertools.product(*(range(s) for s in shape)))


def assert_causal(jac, shape):
  """Sub-pixel t's conditional depends on no sub-pixel >= t, and on some < t."""
  order = raster_order(shape)
  for t, (i, j, c) in enumerate(order):
    for s, (i2, j2, c2) in enumerate(order):
      allowed = (i2, j2) < (i, j) or ((i2, j2) == (i, j) and c2 < c)
      if not allowed:
        assert jac[t, s] == 0.0, ((i, j, c), (i2, j2, c2))
    if t > 0:
      assert np.any(jac[t, :t] != 0), (i, j, c)


def check_log_likelihood_one_pixel_at_a_time(family, model, batch, likelihood):
  """``family.log_likelihood`` and ``loss`` against conditionals recomputed on images
  that hold only the sub-pixels before each one."""
  x = np.asarray(batch["image"])
  n, shape = x.shape[0], x.shape[1:]
  order = raster_order(shape)
  partial = np.zeros((len(order), *x.shape), np.uint8)  # [T, B, H, W, C]
  for t in range(len(order)):
    for i, j, c in order[:t]:
      partial[t, :, i, j, c] = x[:, i, j, c]
  logits = call(lambda m, p: family.conditionals(m, p.reshape(-1, *shape)), model,
                jnp.asarray(partial))
  logits = np.asarray(logits).reshape(len(order), n, *logits.shape[1:])
  total = np.zeros(n)
  for t, (i, j, c) in enumerate(order):
    lt = logits[t, :, i, j, c]
    if likelihood == "bernoulli":
      total += x[:, i, j, c] * lt - np.logaddexp(0, lt)
    else:
      total += (lt - np.logaddexp.reduce(lt, axis=-1, keepdims=True))[
          np.arange(n), x[:, i, j, c]]
  check_likelihood_and_loss(family, model, batch, total, atol=1e-4)


def check_likelihood_and_loss(family, model, batch, total, atol):
  """``log_likelihood`` equals ``total`` (nats per example), and ``loss`` reports its
  mean as ``nll_nats`` and ``bits_per_dim``."""
  shape = np.asarray(batch["image"]).shape[1:]
  ll = call(lambda m, b: family.log_likelihood(m, b, None), model, batch)
  np.testing.assert_allclose(ll, total, rtol=1e-5, atol=atol)
  loss, metrics = call(lambda m, b: family.loss(m, b, jax.random.key(0)), model, batch)
  np.testing.assert_allclose(metrics["nll_nats"], -total.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"],
                             -total.mean() / (np.prod(shape) * np.log(2)), rtol=1e-5)
  assert loss == metrics["loss"]


def check_cached_sampling_equals_naive(sample, model, num, max_value, min_distinct=2,
                                       **kwargs):
  """``sample(model, key, num, method=..., temperature=0.9, **kwargs)`` under jit gives the
  same uint8 images for both methods and one key, and other images for another key."""
  graphdef, state = nnx.split(model)
  run = jit(lambda s, k, method: sample(nnx.merge(graphdef, s), k, num, method=method,
                                        temperature=0.9, **kwargs), static_argnums=2)
  key = jax.random.key(3)
  cached, naive = run(state, key, "cached"), run(state, key, "naive")
  assert cached.dtype == jnp.uint8 and cached.shape == (num, *model.input_shape)
  np.testing.assert_array_equal(cached, naive)
  assert int(cached.max()) <= max_value
  assert len(np.unique(np.asarray(cached))) >= min_distinct
  assert not np.array_equal(cached, run(state, jax.random.key(4), "cached"))

