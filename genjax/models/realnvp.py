"""RealNVP (Dinh et al. 2017): a multi-scale flow of checkerboard and channel couplings.

The generator ``G`` maps standard normal latents to images; training maximises the
exact log-likelihood ``log p(x) = log N(G^-1(x)) + log|det J_{G^-1}(x)|``.

Architecture (``num_levels`` = L scales, ``num_steps`` = K steps per block, each step
two affine couplings with alternating masks, i.e. 2K couplings per block)::

  x in [0, 1)^(H x W x C)  ->  logit(alpha + (1 - 2 alpha) x)        (section 4.1)
  scale l <= L: K checkerboard steps at (H, W, C)
                squeeze -> (H/2, W/2, 4C); K channel-wise steps
                split: keep 2C channels, factor out 2C as z_l (a learned prior)
  final:        K checkerboard steps at (H / 2^L, W / 2^L, 2^L C) -> z_{L+1}

so the image side must be divisible by ``2**L``: for MNIST, L = 2 gives
28 -> 14 -> 7 (latents 14x14x2, 7x7x4, 7x7x4); for the 8x8 digits 8 -> 4 -> 2.
The K steps of a block have stacked parameters and run in one ``lax.scan``
(`genjax.nn.flows.FlowStack`). Each coupling's conditioner is a small conv ResNet
with a zero-initialised last layer, its scale ``exp(scale_c * tanh(h))`` (RealNVP's
bounded scale), and every step starts with an ActNorm (``actnorm=True``, a
data-initialised stand-in for the paper's batch normalisation, so that density
evaluation does not depend on the batch). The factored-out halves get Glow's
learned conditional prior, and every latent is returned standardised, so
``forward`` maps to N(0, I) and sampling at temperature T draws ``z ~ N(0, T^2 I)``.

Input space and units: ``forward`` / ``inverse`` work on the dequantised image
``x = (k + u) / 256`` in ``[0, 1)``, ``k`` the 8-bit value and ``u ~ U[0, 1)``; the
logit's log-det is part of ``forward``'s. `log_likelihood` returns
``log p_model(x) - D log 256`` in nats per example: the density of ``k + u``, a
single-sample lower bound on ``log P(k)`` of the discrete image (Theis et al. 2016);
bits/dim is its negative over ``D ln 2``.

Config (``config.model``): ``name="realnvp"``, ``input_shape``, ``num_levels`` (2),
``num_steps`` (2), ``hidden`` (64), ``num_blocks`` (2, ResBlocks per conditioner),
``coupling`` (``"affine"`` | ``"additive"``), ``scale`` (``"tanh"`` | ``"sigmoid"``),
``permutation`` (mixing in the channel-wise blocks: ``"none"`` alternates the halves
as in the paper; ``"reverse"``, ``"shuffle"``, ``"conv1x1"``, ``"conv1x1_lu"``),
``actnorm`` (True), ``preprocess`` (``"logit"`` | ``"center"``), ``alpha`` (0.05),
``activation`` (``"relu"``), ``dtype`` (``"float32"`` | ``"bfloat16"``: the couplings'
conditioners and the split priors' convolutions compute in it; parameters, images,
latents, ActNorm, the 1x1 convolutions, every log-determinant and the prior
log-densities stay float32).
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
_DEFAULTS = dict(name="realnvp", input_shape=None, num_levels=2, num_steps=2, hidden=64,
                 num_blocks=2, coupling="affine", scale="tanh", permutation="none",
                 actnorm=True, preprocess="logit", alpha=0.05, activation="relu",
                 dtype="float32")
_CHOICES = dict(coupling=flows.COUPLINGS, scale=flows.SCALES, permutation=flows.PERMUTATIONS,
                preprocess=flows.PREPROCESSING, actnorm=(True, False), dtype=tuple(nn.DTYPES))


class RealNVP(nnx.Module):
  """The multi-scale RealNVP flow; see the module docstring for the layout."""

  def __init__(self, input_shape, num_levels, num_steps, hidden, num_blocks, coupling,
               scale, permutation, actnorm, preprocess, alpha, activation,
               dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    # the networks' computation (None: float32); see genjax.nn.flows for what stays float32
    self.dtype = nn.compute_dtype(dtype)
    self.preprocess, self.alpha = preprocess, float(alpha)
    kw = dict(actnorm=actnorm, coupling=coupling, scale=scale, hidden=hidden,
              num_blocks=num_blocks, activation=activation, dtype=self.dtype, rngs=rngs)
    h, w, c = self.input_shape
    checker, channel, priors, latent_shapes = [], [], [], []
    for _ in range(num_levels):
      checker.append(flows.FlowStack(num_steps, c, mask="checkerboard",
                                     permutation="none", **kw))
      h, w, c = h // 2, w // 2, 4 * c
      channel.append(flows.FlowStack(num_steps, c, mask="channel",
                                     permutation=permutation, **kw))
      priors.append(flows.SplitPrior(c, dtype=self.dtype, rngs=rngs))
      latent_shapes.append((h, w, c - c // 2))
      c = c // 2
    self.final = flows.FlowStack(num_steps, c, mask="checkerboard", permutation="none", **kw)
    latent_shapes.append((h, w, c))
    self.checker = nnx.List(checker)
    self.channel = nnx.List(channel)
    self.priors = nnx.List(priors)
    self.latent_shapes = tuple(latent_shapes)

  def forward(self, x_BxHxWxC, initialize: bool = False):
    flow.check_input(x_BxHxWxC, self.input_shape)
    x, logdet = flows.preprocess(x_BxHxWxC, self.preprocess, self.alpha)
    zs = []
    for checker, channel, prior in zip(self.checker, self.channel, self.priors):
      x, ld1 = checker.forward(x, initialize=initialize)
      x, ld2 = channel.forward(flows.squeeze(x), initialize=initialize)
      x, z, ld3 = prior.forward(x)
      zs.append(z)
      logdet = logdet + ld1 + ld2 + ld3
    x, ld = self.final.forward(x, initialize=initialize)
    return zs + [x], logdet + ld

  def inverse(self, zs):
    x = self.final.inverse(zs[-1])
    for level in reversed(range(len(self.priors))):
      x = self.priors[level].inverse(x, zs[level])
      x = self.checker[level].inverse(flows.unsqueeze(self.channel[level].inverse(x)))
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


def build(config, key: jax.Array) -> RealNVP:
  """Builds a RealNVP model from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` or dict with ``input_shape=(H, W, C)`` and the optional
      fields of the module docstring.
    key: PRNG key of the initialisation (seeds the ``rbg`` generator of
      `genjax.models.flow.init_rngs`).

  Returns:
    The `RealNVP` module; ``input_shape`` and ``latent_shapes`` are static attributes.

  Raises:
    ValueError: for an unknown field, a bad value, or H or W not divisible by
      ``2**num_levels``.

  References:
    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
  """
  cfg = _parse(config)
  del cfg["name"]
  return RealNVP(**cfg, rngs=flow.init_rngs(key))
