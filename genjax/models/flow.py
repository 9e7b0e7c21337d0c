"""The protocol shared by the flow families (`genjax.models.realnvp`, `genjax.models.glow`).

A flow model is an NNX module with ``forward(x, initialize=False) -> (zs, logdet_B)``
from the dequantised image ``x`` in ``[0, 1)`` to a list of standard-normal latents,
``inverse(zs) -> x`` and the static ``input_shape`` and ``latent_shapes``. This module
turns any such model into a registered family: the public functions below
(`forward`, `inverse`, `log_likelihood`, `loss`, `sample`, `initialize`,
`visualizations`) are the family's protocol, re-exported by each flow family
module, next to its own ``build`` and ``check_config``.

Units: `log_likelihood` is ``log p_model((x + u) / 256) - D log 256`` in nats per
example (the density of ``k + u`` for the 8-bit value ``k`` and ``u ~ U[0, 1)``, a
single-sample lower bound on ``log P(k)``); bits/dim is its negative over ``D ln 2``.

References:
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
  Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
  NeurIPS 2018.
  Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
  ICLR 2016.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genjax import compiled
from genjax import distributions as dist
from genjax.models import check_image_batch
from genjax.models import parse_fields
from genjax.nn import flows

TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
LIKELIHOOD = ("exact model density of the dequantised image (single-sample uniform "
              "dequantisation bound on the 8-bit data)")


def check_view(config) -> None:
  """Raises a clear error unless the experiment ``config`` reads the 8-bit data view."""
  if config.data.view != "8bit":
    raise ValueError(f"{config.model.name} models 8-bit images: set config.data.view = "
                     f"'8bit' (got {config.data.view!r})")


def parse_config(config, defaults: dict, choices: dict) -> dict:
  """Validates a flow family's ``config.model`` and fills its defaults.

  Args:
    config: the ``model`` block (``ConfigDict`` or dict).
    defaults: every known field and its default (``defaults["name"]`` is the family).
    choices: allowed values of the string fields.

  Returns:
    A dict of every field, with ints for the sizes and a tuple ``input_shape``.

  Raises:
    ValueError: naming the field and what is allowed, for an unknown field, a bad
      value, or an image side not divisible by ``2**num_levels`` (each level squeezes
      H and W by 2).
  """
  family = defaults["name"]
  cfg = parse_fields(config, defaults, choices)
  for name in ("num_levels", "num_steps", "hidden", "num_blocks"):
    value = cfg[name]
    minimum = 0 if name == "num_blocks" else 1
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
      raise ValueError(f"config.model.{name} must be an int >= {minimum}, got {value!r}")
    cfg[name] = int(value)
  if not 0.0 < float(cfg["alpha"]) < 0.5:
    raise ValueError(f"config.model.alpha must be in (0, 0.5), got {cfg['alpha']!r}")
  h, w, _ = cfg["input_shape"]
  factor = 2 ** cfg["num_levels"]
  if h % factor or w % factor:
    raise ValueError(
        f"{family} with num_levels={cfg['num_levels']} squeezes H and W by 2 at each "
        f"level, so they must be divisible by {factor}; the input is {h}x{w}. Choose "
        f"num_levels so that 2**num_levels divides both (e.g. 2 for 28x28: 28 -> 14 -> 7).")
  return cfg


def init_rngs(key: jax.Array) -> nnx.Rngs:
  """``nnx.Rngs`` for a flow's parameters, drawn with the ``rbg`` PRNG seeded from ``key``.

  XLA compiles ``rbg``'s RngBitGenerator several times faster than threefry on a CPU,
  and a flow draws many differently shaped (vmapped) initial weights, so a build
  takes a second instead of many. The parameters are a deterministic function of
  ``key`` on a given backend.

  Args:
    key: a (threefry) PRNG key.

  Returns:
    ``nnx.Rngs`` with a ``params`` stream.
  """
  return nnx.Rngs(params=jax.random.wrap_key_data(
      jax.random.bits(key, (4,), jnp.uint32), impl="rbg"))


def check_input(x_BxHxWxC, input_shape: Sequence[int]) -> None:
  """Raises a clear error unless ``x`` is a float ``[B, *input_shape]`` (at trace time).

  Args:
    x_BxHxWxC: the input of a flow model's ``forward``.
    input_shape: the ``(H, W, C)`` the model was built for.

  Raises:
    ValueError: for another shape; TypeError: for integer images (dequantise them
      first, e.g. with `dequantize`).
  """
  shape = tuple(getattr(x_BxHxWxC, "shape", ()))
  if len(shape) != 4 or shape[1:] != tuple(input_shape):
    raise ValueError(
        f"the flow was built for inputs of shape [B, {', '.join(map(str, input_shape))}] "
        f"(H, W, C), got {shape}")
  if not jnp.issubdtype(x_BxHxWxC.dtype, jnp.floating):
    raise TypeError(
        f"a flow's forward takes dequantised float images in [0, 1), got dtype "
        f"{x_BxHxWxC.dtype}; use genjax.models.flow.dequantize(image_uint8, key) first")


def dequantize(image_BxHxWxC: jax.Array, key: jax.Array) -> jax.Array:
  """Uniform dequantisation ``(x + u) / 256``, ``u ~ U[0, 1)``: the flows' input space.

  Args:
    image_BxHxWxC: uint8 images with values 0..255.
    key: PRNG key of the noise ``u``.

  Returns:
    float32 images in ``[0, 1)`` (``genjax.data.dequantize`` with ``num_bits=8``).

  References:
    Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
    ICLR 2016. Dinh et al., "Density estimation using Real NVP", ICLR 2017.
  """
  from genjax import data  # pylint: disable=g-import-not-at-top  (TFDS/grain: lazy)
  return data.dequantize(image_BxHxWxC, key, num_bits=8)


def log_prob(zs: Sequence[jax.Array], logdet_B: jax.Array) -> jax.Array:
  """The change of variables ``log p(x) = sum_i log N(z_i; 0, I) + logdet``.

  Args:
    zs: the latents of a flow's ``forward`` (each ``[B, ...]``).
    logdet_B: ``log|det dz/dx|`` per example.

  Returns:
    ``float32[B]``, the log-density (nats) of the flow's input ``x``.

  References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, equation (3).
  """
  return logdet_B + sum(flows.sum_hwc(dist.standard_normal_log_prob(z)) for z in zs)


def dequantized_log_likelihood(model, image_BxHxWxC, key):
  """``log p_model((x + u) / 256) - D log 256`` per example, and its parts.

  ``P(x) = 256^-D E_u[p_model((x + u) / 256)]`` is the probability of the discrete
  image ``x``, so by Jensen ``log P(x) >= E_u[log p_model((x + u) / 256)] - D log 256``;
  one draw of ``u`` gives an unbiased estimate of that bound. ``p_model`` includes
  every Jacobian term of the model's ``forward`` (the logit transform, squeezes,
  steps, split priors).

  Args:
    model: a flow model (``forward``, ``input_shape``).
    image_BxHxWxC: uint8 images, 0..255.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``(ll_B, log_prior_B, logdet_B)`` in nats: ``ll_B`` is the density of ``x + u``
    on the ``[0, 256)^D`` scale; ``log_prior_B = sum log N(zs)`` and ``logdet_B`` the
    log-det of ``forward`` (so ``ll = log_prior + logdet - D log 256``).

  References:
    Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
    ICLR 2016, section 3.1.
  """
  dims = math.prod(model.input_shape)
  zs, logdet_B = model.forward(dequantize(image_BxHxWxC, key))
  log_prior_B = log_prob(zs, jnp.zeros_like(logdet_B))
  return log_prior_B + logdet_B - dims * math.log(256.0), log_prior_B, logdet_B


def nll_loss(model, image_BxHxWxC, key):
  """The mean negative `dequantized_log_likelihood` and its metrics.

  Args:
    model: a flow model.
    image_BxHxWxC: uint8 images, 0..255.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``(nll, metrics)``: ``nll`` in nats per example; metrics ``loss``, ``nll_nats``,
    ``bits_per_dim = nll / (D ln 2)``, ``log_prior`` and ``logdet`` (batch means).

  References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, section 4.1.
  """
  ll_B, log_prior_B, logdet_B = dequantized_log_likelihood(model, image_BxHxWxC, key)
  nll = -jnp.mean(ll_B)
  dims = math.prod(model.input_shape)
  return nll, {"loss": nll, "nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2.0)),
               "log_prior": jnp.mean(log_prior_B), "logdet": jnp.mean(logdet_B)}


def draw_latents(model, key: jax.Array, num: int) -> list[jax.Array]:
  """Standard normal latents for ``num`` samples, one array per ``model.latent_shapes``.

  Args:
    model: a flow model (``latent_shapes``).
    key: PRNG key.
    num: number of samples (static).

  Returns:
    A list of ``float32[num, *shape]`` arrays.
  """
  sizes = [math.prod(s) for s in model.latent_shapes]
  z_NxD = jax.random.normal(key, (num, sum(sizes)))  # one draw: one PRNG kernel
  parts = jnp.split(z_NxD, np.cumsum(sizes)[:-1], axis=1)
  return [p.reshape(num, *s) for p, s in zip(parts, model.latent_shapes)]


def to_uint8(x_BxHxWxC: jax.Array) -> jax.Array:
  """``[0, 1)`` images to 8-bit values ``floor(256 x)``, clipped to 0..255."""
  return jnp.clip(jnp.floor(x_BxHxWxC * 256.0), 0, 255).astype(jnp.uint8)


@compiled.model_function(static_argnames=("num",))
def sample(model, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
  """Samples ``x = G(temperature * z)``, ``z ~ N(0, I)``, as 8-bit images.

  Args:
    model: a flow model (``inverse``, ``latent_shapes``).
    key: PRNG key.
    num: number of images (static).
    temperature: the standard deviation of the latents.

  Returns:
    ``uint8[num, H, W, C]``, ``floor(256 x)`` clipped to 0..255.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 5 (temperature).
  """
  zs = [temperature * z for z in draw_latents(model, key, num)]
  return to_uint8(model.inverse(zs))


def temperature_grid(model, key: jax.Array, num_per_row: int = 5,
                     temperatures: Sequence[float] = TEMPERATURES) -> jax.Array:
  """Samples at several temperatures from the same noise, in one inverse pass.

  Args:
    model: a flow model.
    key: PRNG key of the shared noise.
    num_per_row: samples per temperature.
    temperatures: one row per temperature, in order.

  Returns:
    ``uint8[len(temperatures) * num_per_row, H, W, C]``, row by row.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, figure 8.
  """
  temps_T = jnp.asarray(temperatures, jnp.float32)
  zs = [(temps_T[:, None, None, None, None] * z[None]).reshape(-1, *z.shape[1:])
        for z in draw_latents(model, key, num_per_row)]
  return to_uint8(model.inverse(zs))  # one inverse pass for every row


# ------------------------------------------------------------------ the protocol


@compiled.model_function
def forward(model, x_BxHxWxC: jax.Array) -> tuple[list[jax.Array], jax.Array]:
  """The inverse generator ``G^-1``: image to standard-normal latents.

  Args:
    model: a flow model (`genjax.models.glow.Glow`, `genjax.models.realnvp.RealNVP`).
    x_BxHxWxC: float32 dequantised images in the input space ``[0, 1)`` (see
      `dequantize`).

  Returns:
    ``(zs, logdet_B)``: the latents (shapes ``model.latent_shapes``: one per
    factored-out part, then the last) and ``log|det dz/dx|`` per example in nats,
    preprocessing included, so ``log p(x) = sum log N(zs) + logdet`` (`log_prob`).

  References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, equations (3)-(6).
    Kingma & Dhariwal, "Glow", NeurIPS 2018, equations (1)-(3).
  """
  return model.forward(x_BxHxWxC)


@compiled.model_function
def inverse(model, zs) -> jax.Array:
  """The generator ``G``: latents (a list shaped like ``model.latent_shapes``) to images.

  Args:
    model: a flow model.
    zs: the latents, e.g. from `forward`.

  Returns:
    ``float32[B, H, W, C]`` in the input space (``[0, 1)`` for latents of real data).
  """
  return model.inverse(list(zs))


@compiled.model_function
def log_likelihood(model, batch, key: jax.Array) -> jax.Array:
  """``log p_model((x + u) / 256) - D log 256``: nats per example, ``float32[B]``.

  The exact model density of the dequantised point ``x + u`` (``u ~ U[0, 1)^D`` drawn
  from ``key``) on the 0..256 scale, every Jacobian term (preprocessing, squeezes,
  steps, split priors) included; its expectation over ``u`` is a lower bound on the
  log-probability of the discrete 8-bit image.

  Args:
    model: a flow model.
    batch: ``{"image": uint8[B, H, W, C], ...}`` with values 0..255.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``float32[B]`` log-likelihoods in nats.

  References:
    Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
    ICLR 2016, section 3.1.
  """
  check_image_batch(batch, model.input_shape)
  return dequantized_log_likelihood(model, batch["image"], key)[0]


@compiled.model_function
def loss(model, batch, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The mean negative `log_likelihood` (nats per example) and metrics.

  Args:
    model: a flow model.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``(loss, metrics)``; metrics hold ``loss``, ``nll_nats``, ``bits_per_dim`` (on the
    discrete 8-bit data), ``log_prior`` and ``logdet`` (means, nats).
  """
  check_image_batch(batch, model.input_shape)
  return nll_loss(model, batch["image"], key)


@jax.jit(static_argnums=0)
def _initialize_jit(graphdef, state, image_BxHxWxC, key):
  model = nnx.merge(graphdef, state)
  model.forward(dequantize(image_BxHxWxC, key), initialize=True)
  return nnx.state(model)


def initialize(model, batch, key: jax.Array) -> None:
  """Data-dependent ActNorm initialisation on the first batch, in place.

  Runs ``model.forward(x, initialize=True)`` compiled on the dequantised batch: every
  ActNorm, in the order of the flow (a scan through each stack), is set to give zero
  mean and unit variance per channel on its own input. ActNorms already initialised
  (their ``initialized`` flag is set, e.g. after a restore) keep their values.

  Args:
    model: a flow model.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: PRNG key of the dequantisation noise.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 3.1.
  """
  check_image_batch(batch, model.input_shape)
  graphdef, state = nnx.split(model)
  nnx.update(model, _initialize_jit(graphdef, state, jnp.asarray(batch["image"]), key))


@compiled.model_function
def visualizations(model, key: jax.Array, batch) -> dict[str, jax.Array]:
  """``{"temperatures": uint8[25, H, W, C]}``: 5 rows of 5 samples at temperatures
  0, 0.25, 0.5, 0.75 and 1, every row from the same noise (Glow, figure 8)."""
  del batch
  return {"temperatures": temperature_grid(model, key)}
