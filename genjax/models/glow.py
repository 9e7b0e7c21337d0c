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
``"logit"``), ``alpha`` (0.05, logit only), ``activation`` (``"relu"``), ``dtype``
(``"float32"`` | ``"bfloat16"``: the couplings' conditioners and the split priors'
convolutions compute in it; parameters, images, latents, ActNorm, the invertible 1x1
convolutions and their log|det|, every log-determinant and the prior log-densities
stay float32).
"""

from __future__ import annotations

import jax
from flax import nnx

from genjax import nn
from genjax.models import flow
# The family protocol, the same for every flow: see genjax.models.flow.
from genjax.models.flow import (LIKELIHOOD, forward, initialize, inverse,  # noqa: F401
                                log_likelihood, loss, sample, visualizations)
from genjax.nn import flows
_DEFAULTS = dict(name="glow", input_shape=None, num_levels=2, num_steps=8, hidden=64,
                 num_blocks=1, coupling="affine", scale="sigmoid", permutation="conv1x1_lu",
                 actnorm=True, preprocess="center", alpha=0.05, activation="relu",
                 dtype="float32")
_CHOICES = dict(coupling=flows.COUPLINGS, scale=flows.SCALES, permutation=flows.PERMUTATIONS,
                preprocess=flows.PREPROCESSING, actnorm=(True, False), dtype=tuple(nn.DTYPES))


class Glow(nnx.Module):
  """The multi-scale Glow flow; see the module docstring for the layout."""

  def __init__(self, input_shape, num_levels, num_steps, hidden, num_blocks, coupling,
               scale, permutation, actnorm, preprocess, alpha, activation,
               dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    # the networks' computation (None: float32); see genjax.nn.flows for what stays float32
    self.dtype = nn.compute_dtype(dtype)
    self.preprocess, self.alpha = preprocess, float(alpha)
    h, w, c = self.input_shape
    stacks, priors, latent_shapes = [], [], []
    for level in range(num_levels):
      h, w, c = h // 2, w // 2, 4 * c
      stacks.append(flows.FlowStack(
          num_steps, c, actnorm=actnorm, permutation=permutation, mask="channel",
          coupling=coupling, scale=scale, hidden=hidden, num_blocks=num_blocks,
          activation=activation, dtype=self.dtype, rngs=rngs))
      if level + 1 < num_levels:
        priors.append(flows.SplitPrior(c, dtype=self.dtype, rngs=rngs))
        latent_shapes.append((h, w, c - c // 2))
        c = c // 2
    latent_shapes.append((h, w, c))
    self.stacks = nnx.List(stacks)
    self.priors = nnx.List(priors)
    self.latent_shapes = tuple(latent_shapes)

  def forward(self, x_BxHxWxC, initialize: bool = False):
    flow.check_input(x_BxHxWxC, self.input_shape)
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
  return flow.parse_config(config, _DEFAULTS, _CHOICES)


def check_config(config) -> None:
  """Checks an experiment config before anything is built (``experiment.prepare_config``).

  Raises:
    ValueError: for data other than the ``"8bit"`` view, or a bad ``config.model``.
  """
  flow.check_view(config)
  _parse(config.model)


def build(config, key: jax.Array) -> Glow:
  """Builds a Glow model from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` or dict with ``input_shape=(H, W, C)`` and the optional
      fields of the module docstring.
    key: PRNG key of the initialisation (seeds the ``rbg`` generator of
      `genjax.models.flow.init_rngs`).

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
  return Glow(**cfg, rngs=flow.init_rngs(key))
