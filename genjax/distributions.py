"""Log-densities, KL divergences and samplers shared by the families (all in nats).

Pure ``jax.numpy`` functions, elementwise over their (broadcast) inputs: a caller
sums over the event axes it wants (pixels, latent dimensions). Each one is
written to stay finite for extreme parameters (large logits, tiny or huge scales).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------- Bernoulli


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
  """log Bernoulli(x; sigmoid(logits)), elementwise, stable for any logit.

  Uses ``x * logits - softplus(logits)``, which never forms ``sigmoid(logits)``.

  Args:
    logits: log-odds of ``x = 1``.
    x: observations in ``{0, 1}`` (any dtype; broadcast against ``logits``).

  Returns:
    The log-probabilities in nats, with the broadcast shape.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (appendix C.1,
    the Bernoulli MLP decoder).
  """
  x = jnp.asarray(x, jnp.result_type(logits))
  return x * logits - jax.nn.softplus(logits)


# ----------------------------------------------------------------------- Gaussian


def standard_normal_log_prob(x: jax.Array) -> jax.Array:
  """log N(x; 0, 1), elementwise."""
  return -0.5 * (_LOG_2PI + jnp.square(x))


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """log N(x; mean, exp(log_var)), elementwise (a diagonal Gaussian, per coordinate).

  Args:
    x: points.
    mean: means (broadcast against ``x``).
    log_var: log-variances (broadcast against ``x``).

  Returns:
    The log-densities in nats.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (appendix C.2).
  """
  return -0.5 * (_LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))


def gaussian_kl_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, 1)), elementwise and analytic.

  ``0.5 * (exp(log_var) + mean**2 - 1 - log_var)``; sum over the latent axis for a
  diagonal Gaussian.

  Args:
    mean: means of the posterior.
    log_var: log-variances of the posterior.

  Returns:
    The KL divergences in nats (non-negative).

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (appendix B).
  """
  return 0.5 * (jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var)


# ------------------------------------------------- discretized logistic mixture


def _log1mexp_from_log(log_d: jax.Array) -> jax.Array:
  """log(1 - exp(-d)) for d = exp(log_d) > 0, accurate for tiny and large d."""
  tiny = log_d < -15.0  # d < 3e-7: log(1 - e^-d) = log d - d/2 + O(d^2)
  d = jnp.exp(jnp.maximum(log_d, -15.0))  # safe argument for the unselected branch
  exact = jnp.where(d < math.log(2.0), jnp.log(-jnp.expm1(-d)), jnp.log1p(-jnp.exp(-d)))
  return jnp.where(tiny, log_d - 0.5 * jnp.exp(log_d), exact)


def discretized_logistic_log_prob(
    x: jax.Array, means: jax.Array, log_scales: jax.Array, num_bits: int = 8,
    min_log_scale: float | None = -7.0) -> jax.Array:
  """log P(x) under one discretized logistic, elementwise over broadcast inputs.

  The integers ``0 .. 2**num_bits - 1`` are the centres of equal bins on
  ``[-1, 1]`` (``c = 2 x / (2**num_bits - 1) - 1``, bin half-width
  ``1 / (2**num_bits - 1)``); the lowest bin extends to ``-inf`` and the highest to
  ``+inf``, as in PixelCNN++, so the probabilities of all values sum to 1. Every
  term is computed in log space: the edge bins as ``log sigmoid``, the interior
  bins as ``log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) - softplus(b) +
  log(1 - exp(b - a))``, which is exact (it needs no midpoint-density fallback)
  and finite for any mean and scale.

  Args:
    x: integers in ``0 .. 2**num_bits - 1`` (e.g. uint8 pixels).
    means: locations in ``[-1, 1]`` units (broadcast against ``x``).
    log_scales: log-scales (broadcast against ``x``); clamped below at
      ``min_log_scale`` (PixelCNN++ uses -7; ``None`` disables the clamp).
    num_bits: bits per value.
    min_log_scale: the clamp of ``log_scales``.

  Returns:
    The log-probabilities in nats, with the broadcast shape.

  References:
    Salimans, Karpathy, Chen & Kingma, "PixelCNN++: Improving the PixelCNN with
    discretized logistic mixture likelihood and other modifications", ICLR 2017
    (section 2.1).
  """
  max_value = 2 ** num_bits - 1
  x_int = jnp.asarray(x).astype(jnp.int32)
  dtype = jnp.result_type(means, log_scales, jnp.float32)
  centre = x_int.astype(dtype) * (2.0 / max_value) - 1.0
  if min_log_scale is not None:
    log_scales = jnp.maximum(log_scales, min_log_scale)
  inv_scale = jnp.exp(-log_scales)
  upper = inv_scale * (centre - means + 1.0 / max_value)   # a: the bin's upper edge
  lower = inv_scale * (centre - means - 1.0 / max_value)   # b: the bin's lower edge
  log_cdf_upper = jax.nn.log_sigmoid(upper)                # x = 0: P(X <= upper)
  log_sf_lower = -jax.nn.softplus(lower)                   # x = max: P(X > lower)
  log_width = math.log(2.0 / max_value) - log_scales       # log(a - b)
  log_mass = log_cdf_upper - jax.nn.softplus(lower) + _log1mexp_from_log(log_width)
  return jnp.where(x_int == 0, log_cdf_upper,
                   jnp.where(x_int == max_value, log_sf_lower, log_mass))


def discretized_logistic_mixture_log_prob(
    x: jax.Array, logit_probs: jax.Array, means: jax.Array, log_scales: jax.Array,
    num_bits: int = 8, min_log_scale: float | None = -7.0) -> jax.Array:
  """log P(x) under a mixture of K discretized logistics, elementwise over values.

  Each component is a `discretized_logistic_log_prob` (bins, edge cases and
  numerics are described there). Channels are independent here; PixelCNN++'s
  coupling of RGB means shares one component across a pixel's channels and is
  done by `genjax.models.pixelcnn_pp` with `discretized_logistic_log_prob`.

  Args:
    x: integers in ``0 .. 2**num_bits - 1`` (e.g. uint8 pixels), shape ``[...]``.
    logit_probs: unnormalised mixture log-weights, ``[..., K]``.
    means: component locations in ``[-1, 1]`` units, ``[..., K]``.
    log_scales: component log-scales, ``[..., K]``; clamped below at
      ``min_log_scale`` (PixelCNN++ uses -7; ``None`` disables the clamp).
    num_bits: bits per value.
    min_log_scale: the clamp of ``log_scales``.

  Returns:
    ``[...]`` log-probabilities in nats.

  References:
    Salimans, Karpathy, Chen & Kingma, "PixelCNN++: Improving the PixelCNN with
    discretized logistic mixture likelihood and other modifications", ICLR 2017
    (section 2.1).
  """
  log_prob_K = discretized_logistic_log_prob(jnp.asarray(x)[..., None], means, log_scales,
                                             num_bits, min_log_scale)
  return jax.nn.logsumexp(log_prob_K + jax.nn.log_softmax(logit_probs, axis=-1), axis=-1)


def discretized_logistic_sample(
    key: jax.Array, means: jax.Array, log_scales: jax.Array, num_bits: int = 8,
    min_log_scale: float | None = -7.0) -> jax.Array:
  """Draws integers from one discretized logistic per element.

  Draws a logistic variable and returns the index of the bin it falls in (values
  below the first or above the last bin go to ``0`` or ``2**num_bits - 1``).

  Args:
    key: a PRNG key.
    means: locations in ``[-1, 1]`` units.
    log_scales: log-scales, the shape of ``means`` (clamped as in the log-prob).
    num_bits: bits per value.
    min_log_scale: the clamp of ``log_scales``.

  Returns:
    ``int32`` values in ``0 .. 2**num_bits - 1``, the shape of ``means``.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017.
  """
  max_value = 2 ** num_bits - 1
  if min_log_scale is not None:
    log_scales = jnp.maximum(log_scales, min_log_scale)
  y = means + jnp.exp(log_scales) * jax.random.logistic(key, means.shape, means.dtype)
  value = jnp.round((jnp.clip(y, -2.0, 2.0) + 1.0) * (max_value / 2.0))
  return jnp.clip(value, 0, max_value).astype(jnp.int32)


def discretized_logistic_mixture_sample(
    key: jax.Array, logit_probs: jax.Array, means: jax.Array, log_scales: jax.Array,
    num_bits: int = 8, min_log_scale: float | None = -7.0) -> jax.Array:
  """Draws integers from the mixture of `discretized_logistic_mixture_log_prob`.

  Picks a component per value from ``softmax(logit_probs)`` and draws from it
  with `discretized_logistic_sample`.

  Args:
    key: a PRNG key.
    logit_probs: ``[..., K]`` unnormalised mixture log-weights.
    means: ``[..., K]`` component locations in ``[-1, 1]`` units.
    log_scales: ``[..., K]`` component log-scales (clamped as in the log-prob).
    num_bits: bits per value.
    min_log_scale: the clamp of ``log_scales``.

  Returns:
    ``int32[...]`` values in ``0 .. 2**num_bits - 1``.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017.
  """
  logit_probs, means, log_scales = jnp.broadcast_arrays(logit_probs, means, log_scales)
  shape, num_k = logit_probs.shape[:-1], logit_probs.shape[-1]
  # Flat draws: the same numbers as shaped ones, and faster to compile on a CPU.
  logit_probs, means, log_scales = (a.reshape(-1, num_k) for a in (logit_probs, means, log_scales))
  key_k, key_l = jax.random.split(key)
  if min_log_scale is not None:
    log_scales = jnp.maximum(log_scales, min_log_scale)
  k = jax.random.categorical(key_k, logit_probs, axis=-1)
  one_hot = jax.nn.one_hot(k, num_k, dtype=means.dtype)
  mean = jnp.sum(means * one_hot, axis=-1)
  log_scale = jnp.sum(log_scales * one_hot, axis=-1)
  value = discretized_logistic_sample(key_l, mean, log_scale, num_bits, None)
  return value.reshape(shape)
