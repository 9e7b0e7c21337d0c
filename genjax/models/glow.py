"""Glow (Kingma & Dhariwal 2018): a multi-scale flow of ActNorm, 1x1 convolutions, couplings.

The generator ``G`` maps standard normal latents to images; training maximises the
exact log-likelihood ``log p(x) = log N(G^-1(x)) + log|det J_{G^-1}(x)|``.

Architecture (``num_levels`` = L levels, ``num_steps`` = K steps per level)::

  x in [0, 1)^(H x W x C)  ->  x - 0.5 (or RealNVP's logit)
  level l < L:  squeeze (H, W, C) -> (H/2, W/2, 4C)
                K x [ActNorm -> invertible 1x1 conv (LU) -> affine coupling]
                split: keep 2C channels, factor out 2C as z_l (a learned prior)
  level L:      squeeze, K steps; the output is the last latent z_L ~ N(0, I)

so the image side must be divisible by ``2**L``: for MNIST, L = 2 gives
28 -> 14 -> 7 (latents 14x14x2 and 7x7x8); for the 8x8 digits 8 -> 4 -> 2. The K
steps of a level have stacked parameters and run in one ``lax.scan``
(`genjax.nn.flows.FlowStack`). Every latent is returned standardised
(``z = (x_b - mean) / scale`` for the factored-out parts), so ``forward`` maps to
N(0, I) and sampling at temperature T draws ``z ~ N(0, T^2 I)``.

Input space and units: ``forward`` / ``inverse`` work on the dequantised image
``x = (k + u) / 256`` in ``[0, 1)``, ``k`` the 8-bit value and ``u ~ U[0, 1)``.
`log_likelihood` returns ``log p_model(x) - D log 256`` in nats per example: the
density of ``k + u``, a single-sample lower bound on ``log P(k)`` of the discrete
image (Theis et al. 2016); bits/dim is its negative over ``D ln 2``.

Config (``config.model``): ``name="glow"``, ``input_shape``, ``num_levels`` (2),
``num_steps`` (8), ``hidden`` (64, conditioner width), ``num_blocks`` (1, ResBlocks per
conditioner), ``coupling`` (``"affine"`` | ``"additive"``), ``scale`` (``"sigmoid"`` |
``"tanh"``), ``permutation`` (``"conv1x1_lu"`` | ``"conv1x1"`` | ``"reverse"`` |
``"shuffle"`` | ``"none"``), ``actnorm`` (True), ``preprocess`` (``"center"`` |
``"logit"``), ``alpha`` (0.05, logit only), ``activation`` (``"relu"``).
"""

from __future__ import annotations

import jax
from flax import nnx

from genjax.models import check_image_batch
from genjax.nn import flows

LIKELIHOOD = ("exact model density of the dequantised image (single-sample uniform "
              "dequantisation bound on the 8-bit data)")
_DEFAULTS = dict(name="glow", input_shape=None, num_levels=2, num_steps=8, hidden=64,
                 num_blocks=1, coupling="affine", scale="sigmoid", permutation="conv1x1_lu",
                 actnorm=True, preprocess="center", alpha=0.05, activation="relu")
_CHOICES = dict(coupling=flows.COUPLINGS, scale=flows.SCALES, permutation=flows.PERMUTATIONS,
                preprocess=flows.PREPROCESSING, actnorm=(True, False))


class Glow(nnx.Module):
  """The multi-scale Glow flow; see the module docstring for the layout."""

  def __init__(self, input_shape, num_levels, num_steps, hidden, num_blocks, coupling,
               scale, permutation, actnorm, preprocess, alpha, activation, *,
               rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.preprocess, self.alpha = preprocess, float(alpha)
    h, w, c = self.input_shape
    stacks, priors, latent_shapes = [], [], []
    for level in range(num_levels):
      h, w, c = h // 2, w // 2, 4 * c
      stacks.append(flows.FlowStack(
          num_steps, c, actnorm=actnorm, permutation=permutation, mask="channel",
          coupling=coupling, scale=scale, hidden=hidden, num_blocks=num_blocks,
          activation=activation, rngs=rngs))
      if level + 1 < num_levels:
        priors.append(flows.SplitPrior(c, rngs=rngs))
        latent_shapes.append((h, w, c - c // 2))
        c = c // 2
    latent_shapes.append((h, w, c))
    self.stacks = nnx.List(stacks)
    self.priors = nnx.List(priors)
    self.latent_shapes = tuple(latent_shapes)

  def forward(self, x_BxHxWxC, initialize: bool = False):
    flows.check_input(x_BxHxWxC, self.input_shape)
    x, logdet = flows.preprocess(x_BxHxWxC, self.preprocess, self.alpha)
    zs = []
    for level, stack in enumerate(self.stacks):
      x, ld = stack.forward(flows.squeeze(x), initialize=initialize)
      logdet = logdet + ld
      if level < len(self.priors):
        x, z, ld = self.priors[level].forward(x)
        zs.append(z)
        logdet = logdet + ld
    return zs + [x], logdet

  def inverse(self, zs):
    x = zs[-1]
    for level in reversed(range(len(self.stacks))):
      if level < len(self.priors):
        x = self.priors[level].inverse(x, zs[level])
      x = flows.unsqueeze(self.stacks[level].inverse(x))
    return flows.postprocess(x, self.preprocess, self.alpha)


def _parse(config) -> dict:
  return flows.parse_config(config, _DEFAULTS, _CHOICES)


def check_config(config) -> None:
  """Checks an experiment config before anything is built (``experiment.prepare_config``).

  Raises:
    ValueError: for data other than the ``"8bit"`` view, or a bad ``config.model``.
  """
  if config.data.view != "8bit":
    raise ValueError(f"glow models 8-bit images: set config.data.view = '8bit' "
                     f"(got {config.data.view!r})")
  _parse(config.model)


def build(config, key: jax.Array) -> Glow:
  """Builds a Glow model from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` or dict with ``input_shape=(H, W, C)`` and the optional
      fields of the module docstring.
    key: PRNG key of the initialisation (seeds the ``rbg`` generator of
      `genjax.nn.flows.init_rngs`).

  Returns:
    The `Glow` module; ``input_shape`` and ``latent_shapes`` are static attributes.

  Raises:
    ValueError: for an unknown field, a bad value, or H or W not divisible by
      ``2**num_levels``.

  References:
    Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
    NeurIPS 2018.
  """
  cfg = _parse(config)
  del cfg["name"]
  return Glow(**cfg, rngs=flows.init_rngs(key))


def forward(model: Glow, x_BxHxWxC: jax.Array) -> tuple[list[jax.Array], jax.Array]:
  """The inverse generator ``G^-1``: image to standard-normal latents.

  Args:
    model: a `Glow`.
    x_BxHxWxC: float32 dequantised images in the input space ``[0, 1)``.

  Returns:
    ``(zs, logdet_B)``: the latents (one per level, shapes ``model.latent_shapes``)
    and ``log|det dz/dx|`` per example in nats (preprocessing included), so
    ``log p(x) = sum log N(zs) + logdet``.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, equations (1)-(3).
  """
  return model.forward(x_BxHxWxC)


def inverse(model: Glow, zs) -> jax.Array:
  """The generator ``G``: latents (a list shaped like ``model.latent_shapes``) to images.

  Args:
    model: a `Glow`.
    zs: the latents, e.g. from `forward`.

  Returns:
    ``float32[B, H, W, C]`` in the input space (``[0, 1)`` for latents of real data).

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018.
  """
  return model.inverse(list(zs))


def log_likelihood(model: Glow, batch, key: jax.Array) -> jax.Array:
  """``log p_model((x + u) / 256) - D log 256``: nats per example, ``float32[B]``.

  The exact model density of the dequantised point ``x + u`` (``u ~ U[0, 1)^D`` drawn
  from ``key``) on the 0..256 scale; its expectation over ``u`` is a lower bound on
  the log-probability of the discrete 8-bit image.

  Args:
    model: a `Glow`.
    batch: ``{"image": uint8[B, H, W, C], ...}`` with values 0..255.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``float32[B]`` log-likelihoods in nats.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 2.
    Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
    ICLR 2016.
  """
  check_image_batch(batch, model.input_shape)
  return flows.dequantized_log_likelihood(model, batch["image"], key)[0]


def loss(model: Glow, batch, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The mean negative `log_likelihood` (nats per example) and metrics.

  Args:
    model: a `Glow`.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: PRNG key of the dequantisation noise.

  Returns:
    ``(loss, metrics)``; metrics hold ``loss``, ``nll_nats``, ``bits_per_dim`` (on the
    discrete 8-bit data), ``log_prior`` and ``logdet`` (means, nats).

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 2.
  """
  check_image_batch(batch, model.input_shape)
  return flows.nll_loss(model, batch["image"], key)


def sample(model: Glow, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
  """Draws ``z ~ N(0, temperature^2 I)`` and returns ``G(z)`` as 8-bit images.

  Args:
    model: a `Glow`.
    key: PRNG key.
    num: number of images (static).
    temperature: scale of the latents' standard deviation (Glow, section 5).

  Returns:
    ``uint8[num, H, W, C]`` with values 0..255 (``floor(256 x)``, clipped).

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 5 (temperature).
  """
  return flows.sample(model, key, num, temperature)


def initialize(model: Glow, batch, key: jax.Array) -> None:
  """Data-dependent ActNorm initialisation on the first batch, in place.

  Sets every ActNorm, level by level and step by step (in a scan), so that its
  outputs have zero mean and unit variance per channel on the dequantised ``batch``.
  ActNorms already initialised (e.g. restored from a checkpoint) are left unchanged.

  Args:
    model: a `Glow`.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: PRNG key of the dequantisation noise.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 3.1.
  """
  check_image_batch(batch, model.input_shape)
  flows.initialize(model, batch["image"], key)


def visualizations(model: Glow, key: jax.Array, batch) -> dict[str, jax.Array]:
  """``{"temperatures": uint8[25, H, W, C]}``: 5 rows of 5 samples at temperatures
  0, 0.25, 0.5, 0.75 and 1, every row from the same noise (Glow, figure 8)."""
  del batch
  graphdef, state = nnx.split(model)
  return {"temperatures": _temperature_grid_jit(graphdef, state, key)}


@jax.jit(static_argnums=0)
def _temperature_grid_jit(graphdef, state, key):
  return flows.temperature_grid(nnx.merge(graphdef, state), key)
