"""The discretized logistic mixture of PixelCNN++ (Salimans et al. 2017), per pixel.

``p(x_ij | x_<ij) = sum_k pi_k prod_c DLogistic(x_ijc; mu_ck + sum_(c' < c) a_cc'k
x_ijc', s_ck)``: ``K`` logistic components shared by a pixel's channels, each
discretized to the 256 values ``0..255`` (`genjax.distributions`, edge bins to
+-inf), with the channel coupling of the paper (G's mean shifted by ``a * R``,
B's by R and G, ``a = tanh(.)``; values in [-1, 1] units). Grey images have no
coupling. A network emits `num_params` numbers per pixel; `split_params` names
them, `coupled_means` applies the coupling for given pixel values,
`pixel_log_prob` scores pixels and `draw_pixel` samples them.

References:
  Salimans, Karpathy, Chen & Kingma, "PixelCNN++: Improving the PixelCNN with
  discretized logistic mixture likelihood and other modifications", ICLR 2017
  (sections 2.1 and 2.2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from genjax import distributions as dist
from genjax.models import autoregressive as ar

MIN_LOG_SCALE = -7.0


class Mixture(NamedTuple):
  """Parameters of ``p(x_ij | x_<ij)`` at every pixel (see the module doc).

  Attributes:
    logits: ``[B, H, W, K]`` unnormalised log-weights of the components.
    means: ``[B, H, W, C, K]`` locations in [-1, 1] units (from `pixelcnn_pp.conditionals`:
      already coupled to the earlier channels of the given image).
    log_scales: ``[B, H, W, C, K]`` (clamped at -7 when used).
    coeffs: ``[B, H, W, C * (C - 1) // 2, K]`` coupling ``a_cc'`` in the order
      (1, 0), (2, 0), (2, 1): G from R, B from R, B from G.
  """
  logits: jax.Array
  means: jax.Array
  log_scales: jax.Array
  coeffs: jax.Array


def num_params(channels: int, num_mixtures: int) -> int:
  """Network outputs per pixel: ``K * (1 + 2C + C(C-1)/2)`` (30 grey, 100 RGB at K=10)."""
  return num_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)


def split_params(out, channels: int, k: int) -> Mixture:
  rest = out[..., k:].reshape(*out.shape[:-1], -1, k)
  return Mixture(out[..., :k], rest[..., :channels, :], rest[..., channels:2 * channels, :],
                 jnp.tanh(rest[..., 2 * channels:, :]))


def _pair(c: int, earlier: int) -> int:
  return c * (c - 1) // 2 + earlier


def coupled_means(means_CxK: jax.Array, coeffs_PxK: jax.Array, x_C: jax.Array) -> jax.Array:
  """``mu_c + sum_(c' < c) a_cc' x_c'`` for every channel; ``x`` in [-1, 1], ``[..., C]``.

  Args:
    means_CxK: ``[..., C, K]`` uncoupled means.
    coeffs_PxK: ``[..., C(C-1)/2, K]`` coupling coefficients (`Mixture.coeffs`).
    x_C: ``[..., C]`` the pixel's values in [-1, 1] (only channels < c matter for c).

  Returns:
    ``[..., C, K]``.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017 (section 2.2, eq. 3).
  """
  rows = []
  for c in range(means_CxK.shape[-2]):
    m = means_CxK[..., c, :]
    for earlier in range(c):
      m = m + coeffs_PxK[..., _pair(c, earlier), :] * x_C[..., earlier, None]
    rows.append(m)
  return jnp.stack(rows, axis=-2)


def pixel_log_prob(mix: Mixture, x_BxHxWxC: jax.Array) -> jax.Array:
  """``log p(x_ij | x_<ij)`` in nats, ``[B, H, W]``, from `conditionals`' output."""
  lp_BxHxWxCxK = dist.discretized_logistic_log_prob(
      jnp.asarray(x_BxHxWxC)[..., None], mix.means, mix.log_scales,
      min_log_scale=MIN_LOG_SCALE)
  return jax.nn.logsumexp(lp_BxHxWxCxK.sum(-2) + jax.nn.log_softmax(mix.logits, -1), -1)


def draw_pixel(key: jax.Array, mix: Mixture, temperature=1.0) -> jax.Array:
  """Draws whole pixels: ``mix`` (uncoupled) fields ``[B, ...]`` -> ``int32[B, C]``.

  Picks one component per pixel from ``softmax(logits / T)``, then the channels
  in order, each from its discretized logistic with scale multiplied by ``T``
  and mean coupled to the values (in [-1, 1] units) drawn for the earlier
  channels, as in the likelihood. ``T -> 0`` gives the rounded mean of the
  most probable component.
  """
  key_k, key_c = jax.random.split(key)
  num_k = mix.logits.shape[-1]
  one_hot = jax.nn.one_hot(jax.random.categorical(key_k, mix.logits / temperature),
                           num_k)[:, None, :]
  pick = lambda a: jnp.sum(a * one_hot, axis=-1)  # [B, n, K] -> [B, n]
  means, coeffs = pick(mix.means), pick(mix.coeffs)
  log_scales = jnp.maximum(pick(mix.log_scales), MIN_LOG_SCALE) + jnp.log(temperature)
  values = []
  for c in range(means.shape[-1]):
    m = means[:, c]
    for earlier in range(c):
      m = m + coeffs[:, _pair(c, earlier)] * _to_input(values[earlier])
    values.append(dist.discretized_logistic_sample(
        jax.random.fold_in(key_c, c), m, log_scales[:, c], min_log_scale=None))
  return jnp.stack(values, axis=-1)


def _to_input(x):
  return ar.to_input(x, "categorical")
