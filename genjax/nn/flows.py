"""Invertible layers of normalizing flows (RealNVP, Glow).

Every layer is an NNX module with ``forward(x) -> (y, logdet_B)`` and an exact
``inverse(y) -> x``, where ``logdet_B`` is ``log |det dy/dx|`` per example (nats,
shape ``[B]``). Images are NHWC (``x_BxHxWxC``).

Layers: `ActNorm` (data-dependent initialisation, kept as model state), `AffineCoupling`
(checkerboard or channel mask; affine or additive; bounded scale), `InvertibleConv1x1`
(plain or LU-decomposed), `ChannelPermutation` (reverse or shuffle), `squeeze` /
`unsqueeze`, `SplitPrior` (factor out half the channels with a learned conditional
prior) and the input maps `preprocess` / `postprocess` (logit or centring). A
`FlowStack` holds K identical `FlowStep`s with stacked parameters (created with
``nnx.vmap``) and runs them in one ``lax.scan`` carrying ``(x, logdet)``, so that
compile time does not grow with K. The couplings' conditioner is
`genjax.nn.conditioner.ConvResNet`; the protocol the flow families share (likelihood,
sampling, initialisation) is `genjax.models.flow`.

Mixed precision (``dtype=jnp.bfloat16``): only the networks compute in bfloat16, the
couplings' conditioners and the split priors' convolutions; their outputs are
promoted to float32 before they are used. The flow's own path stays float32: the
images and latents, ActNorm (and its data-dependent statistics), the invertible 1x1
convolution and its log-determinant, the affine maps and every log-determinant and
its sums, so that ``inverse`` undoes ``forward`` as exactly as in float32 (a coupling's
conditioner sees the same input both ways).

References:
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
  Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
  NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genjax.nn.conditioner import Conv
from genjax.nn.conditioner import ConvResNet
from genjax.nn.layers import at_least_float32

MASKS = ("checkerboard", "channel")
COUPLINGS = ("affine", "additive")
SCALES = ("sigmoid", "tanh")
PERMUTATIONS = ("none", "reverse", "shuffle", "conv1x1", "conv1x1_lu")
PREPROCESSING = ("logit", "center")


class FlowBuffer(nnx.Variable):
  """A fixed, non-trainable array of a flow layer (a permutation, the LU's P and sign)."""


class Initialized(nnx.Variable):
  """A bool flag: ActNorm's data-dependent initialisation has run (checkpointed)."""


def sum_hwc(x_BxHxWxC: jax.Array) -> jax.Array:
  """Sums every axis but the first: per-example totals, ``float[B]``."""
  return x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1).sum(-1)

# ------------------------------------------------------------------------- layers


class ActNorm(nnx.Module):
  """Per-channel affine ``y = (x + bias) * exp(log_scale)`` (Glow, section 3.1).

  ``initialize(x)`` sets ``bias`` and ``log_scale`` so that ``y`` has zero mean and
  unit variance per channel on ``x``, once: the ``initialized`` flag is model state,
  saved in checkpoints, and later calls leave the values alone. As in the Glow
  code, ``log_scale = scale_factor * param`` (``logscale_factor = 3``), which makes
  Adam move the log-scales ``scale_factor`` times faster.
  """

  def __init__(self, channels: int, *, scale_factor: float = 3.0, eps: float = 1e-6):
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.log_scale_param = nnx.Param(jnp.zeros((channels,), jnp.float32))
    self.initialized = Initialized(jnp.zeros((), jnp.bool_))
    self.scale_factor, self.eps = scale_factor, eps

  def log_scale(self) -> jax.Array:
    return self.scale_factor * self.log_scale_param[...]

  def forward(self, x_BxHxWxC):
    y = (x_BxHxWxC + self.bias[...]) * jnp.exp(self.log_scale())
    b, h, w, _ = x_BxHxWxC.shape
    return y, jnp.broadcast_to(h * w * jnp.sum(self.log_scale()), (b,))

  def inverse(self, y_BxHxWxC):
    return y_BxHxWxC * jnp.exp(-self.log_scale()) - self.bias[...]

  def initialize(self, x_BxHxWxC) -> None:
    done = self.initialized[...]
    mean_C = jnp.mean(x_BxHxWxC, (0, 1, 2))
    param_C = -jnp.log(jnp.std(x_BxHxWxC, (0, 1, 2)) + self.eps) / self.scale_factor
    self.bias.set_value(jnp.where(done, self.bias[...], -mean_C))
    self.log_scale_param.set_value(jnp.where(done, self.log_scale_param[...], param_C))
    self.initialized.set_value(jnp.ones((), jnp.bool_))


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def checkerboard(height: int, width: int, parity: int) -> np.ndarray:
  """``float32[H, W, 1]``, 1 where ``(i + j) % 2 == parity`` (the conditioning pixels)."""
  i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return ((i + j) % 2 == parity).astype(np.float32)[..., None]


class AffineCoupling(nnx.Module):
  """Affine (or additive) coupling ``y_b = x_b * s(x_a) + t(x_a)``, ``y_a = x_a``.

  ``mask="channel"``: parity 0 conditions on the first ``C // 2`` channels and
  transforms the rest, parity 1 the other way round. ``mask="checkerboard"``:
  pixels with ``(i + j) % 2 == parity`` condition, the others are transformed.
  The scale is bounded: ``"sigmoid"`` is Glow's ``sigmoid(h + 2)`` divided by
  ``sigmoid(2)`` (so ``h = 0`` is the identity; ``s`` in ``(0, 1.14)``), ``"tanh"``
  is RealNVP's ``log s = scale_C * tanh(h)`` with a learned ``scale_C`` (init 1).
  The conditioner computes in ``dtype`` (None: float32); shift and scale are float32.
  """

  def __init__(self, channels: int, *, mask: str = "channel", parity: int = 0,
               coupling: str = "affine", scale: str = "sigmoid", hidden: int = 64,
               num_blocks: int = 1, activation: str = "relu", dtype=None,
               rngs: nnx.Rngs):
    for name, value, allowed in (("mask", mask, MASKS), ("coupling", coupling, COUPLINGS),
                                 ("scale", scale, SCALES)):
      if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    if mask == "channel" and channels < 2:
      raise ValueError(f"a channel-mask coupling needs >= 2 channels, got {channels}")
    self.channels, self.mask, self.parity = channels, mask, parity
    self.coupling, self.scale = coupling, scale
    num_cond = channels // 2 if mask == "channel" else channels
    self.num_trans = channels - channels // 2 if mask == "channel" else channels
    out = self.num_trans * (2 if coupling == "affine" else 1)
    self.net = ConvResNet(num_cond, hidden, out, num_blocks=num_blocks,
                          activation=activation, dtype=dtype, rngs=rngs)
    if coupling == "affine" and scale == "tanh":
      self.tanh_scale = nnx.Param(jnp.ones((self.num_trans,), jnp.float32))

  def _split(self, x):
    n = self.channels // 2 if self.parity == 0 else self.channels - self.channels // 2
    first, second = x[..., :n], x[..., n:]
    return (first, second) if self.parity == 0 else (second, first)  # (cond, trans)

  def _join(self, cond, trans):
    return jnp.concatenate([cond, trans] if self.parity == 0 else [trans, cond], -1)

  def _shift_log_scale(self, cond):
    out = at_least_float32(self.net(cond))
    shift = out[..., :self.num_trans]
    if self.coupling == "additive":
      return shift, jnp.zeros_like(shift)
    h = out[..., self.num_trans:]
    if self.scale == "sigmoid":
      return shift, jax.nn.log_sigmoid(h + 2.0) - jax.nn.log_sigmoid(2.0)
    return shift, self.tanh_scale[...] * jnp.tanh(h)

  def forward(self, x_BxHxWxC):
    if self.mask == "checkerboard":
      m = checkerboard(*x_BxHxWxC.shape[1:3], self.parity)
      shift, log_s = self._shift_log_scale(x_BxHxWxC * m)
      y = m * x_BxHxWxC + (1 - m) * (x_BxHxWxC * jnp.exp(log_s) + shift)
      return y, sum_hwc((1 - m) * log_s)
    cond, trans = self._split(x_BxHxWxC)
    shift, log_s = self._shift_log_scale(cond)
    return self._join(cond, trans * jnp.exp(log_s) + shift), sum_hwc(log_s)

  def inverse(self, y_BxHxWxC):
    if self.mask == "checkerboard":
      m = checkerboard(*y_BxHxWxC.shape[1:3], self.parity)
      shift, log_s = self._shift_log_scale(y_BxHxWxC * m)
      return m * y_BxHxWxC + (1 - m) * (y_BxHxWxC - shift) * jnp.exp(-log_s)
    cond, trans = self._split(y_BxHxWxC)
    shift, log_s = self._shift_log_scale(cond)
    return self._join(cond, (trans - shift) * jnp.exp(-log_s))


class InvertibleConv1x1(nnx.Module):
  """Invertible 1x1 convolution ``y = W x`` per pixel (Glow, section 3.2).

  Plain: ``W`` is a parameter and ``logdet = H W log|det W|`` (``slogdet``). LU:
  ``W = P L (U + diag(sign(s) exp(log|s|)))`` with ``P`` and ``sign(s)`` fixed,
  ``L`` unit lower triangular and ``U`` strictly upper triangular, so
  ``logdet = H W sum(log|s|)``. ``weight`` (default: a random rotation) is the
  initial ``W`` of either form, so both compute the same map from the same matrix.
  """

  def __init__(self, channels: int, *, lu: bool = False, weight=None,
               rngs: nnx.Rngs | None = None):
    if weight is None:
      weight = jax.random.orthogonal(rngs.params(), channels)
    weight = jnp.asarray(weight, jnp.float32)
    self.lu = lu
    if lu:
      p, lower, upper = jax.scipy.linalg.lu(weight)
      s = jnp.diag(upper)
      self.perm = FlowBuffer(p)
      self.sign_s = FlowBuffer(jnp.sign(s))
      self.lower = nnx.Param(jnp.tril(lower, -1))
      self.upper = nnx.Param(jnp.triu(upper, 1))
      self.log_s = nnx.Param(jnp.log(jnp.abs(s)))
    else:
      self.weight = nnx.Param(weight)

  def weight_matrix(self) -> jax.Array:
    """The ``[C_out, C_in]`` matrix ``W``."""
    if not self.lu:
      return self.weight[...]
    c = self.log_s[...].shape[0]
    lower = jnp.tril(self.lower[...], -1) + jnp.eye(c)
    upper = jnp.triu(self.upper[...], 1) + jnp.diag(self.sign_s[...] * jnp.exp(self.log_s[...]))
    return self.perm[...] @ lower @ upper

  def forward(self, x_BxHxWxC):
    b, h, w, _ = x_BxHxWxC.shape
    weight = self.weight_matrix()
    log_abs_det = jnp.sum(self.log_s[...]) if self.lu else jnp.linalg.slogdet(weight)[1]
    y = jnp.einsum("bhwc,dc->bhwd", x_BxHxWxC, weight)
    return y, jnp.broadcast_to(h * w * log_abs_det, (b,))

  def inverse(self, y_BxHxWxC):
    return jnp.einsum("bhwc,dc->bhwd", y_BxHxWxC, jnp.linalg.inv(self.weight_matrix()))


class ChannelPermutation(nnx.Module):
  """A fixed channel permutation (``"reverse"`` or a random ``"shuffle"``); logdet 0."""

  def __init__(self, channels: int, *, kind: str = "reverse", rngs: nnx.Rngs | None = None):
    perm = (jnp.arange(channels)[::-1] if kind == "reverse"
            else jax.random.permutation(rngs.params(), channels))
    self.perm = FlowBuffer(perm.astype(jnp.int32))

  def forward(self, x_BxHxWxC):
    return x_BxHxWxC[..., self.perm[...]], jnp.zeros(x_BxHxWxC.shape[0])

  def inverse(self, y_BxHxWxC):
    return y_BxHxWxC[..., jnp.argsort(self.perm[...])]


def squeeze(x_BxHxWxC: jax.Array) -> jax.Array:
  """Space to depth: ``[B, H, W, C] -> [B, H/2, W/2, 4C]`` (a permutation, logdet 0).

  Output channel ``(2 * dy + dx) * C + c`` holds pixel ``(2i + dy, 2j + dx)`` of
  channel ``c``.

  Raises:
    ValueError: when H or W is odd.
  """
  b, h, w, c = x_BxHxWxC.shape
  if h % 2 or w % 2:
    raise ValueError(f"squeeze needs an even height and width, got {h}x{w}: the image "
                     "side must be divisible by 2**num_levels")
  x = x_BxHxWxC.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x_BxHxWxC: jax.Array) -> jax.Array:
  """The inverse of `squeeze`: ``[B, H, W, 4C] -> [B, 2H, 2W, C]``."""
  b, h, w, c4 = x_BxHxWxC.shape
  c = c4 // 4
  x = x_BxHxWxC.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, c)


class SplitPrior(nnx.Module):
  """Factors out the last ``C - C//2`` channels with a learned prior (Glow's split2d).

  ``x = [x_a, x_b]``; a zero-initialised conv3x3 of the kept ``x_a`` gives ``mean`` and
  ``log_scale`` of ``x_b``. ``forward`` returns ``(x_a, z, logdet_B)`` with the
  standardised ``z = (x_b - mean) exp(-log_scale)`` (standard normal under the model)
  and ``logdet = -sum(log_scale)``, so ``log N(z) + logdet = log p(x_b | x_a)``. The
  convolution computes in ``dtype`` (None: float32); mean and log-scale are float32.
  """

  def __init__(self, channels: int, *, dtype=None, rngs: nnx.Rngs):
    self.num_keep = channels // 2
    out = channels - self.num_keep
    self.conv = Conv(self.num_keep, 2 * out, 3, zero_init=True, dtype=dtype, rngs=rngs)

  def _mean_log_scale(self, keep):
    out = at_least_float32(self.conv(keep))
    n = out.shape[-1] // 2
    return out[..., :n], out[..., n:]

  def forward(self, x_BxHxWxC):
    keep, drop = x_BxHxWxC[..., :self.num_keep], x_BxHxWxC[..., self.num_keep:]
    mean, log_scale = self._mean_log_scale(keep)
    return keep, (drop - mean) * jnp.exp(-log_scale), -sum_hwc(log_scale)

  def inverse(self, keep_BxHxWxK, z_BxHxWxD):
    mean, log_scale = self._mean_log_scale(keep_BxHxWxK)
    return jnp.concatenate([keep_BxHxWxK, mean + jnp.exp(log_scale) * z_BxHxWxD], -1)


def preprocess(x_BxHxWxC, kind: str = "logit", alpha: float = 0.05):
  """Maps the dequantised image in ``[0, 1)`` to the flow's space, with its logdet.

  ``"logit"`` (RealNVP, section 4.1): ``y = logit(alpha + (1 - 2 alpha) x)`` and
  ``logdet = sum log((1 - 2 alpha) / (p (1 - p)))`` with ``p = alpha + (1 - 2 alpha) x``.
  ``"center"`` (Glow): ``y = x - 0.5``, logdet 0.

  Args:
    x_BxHxWxC: dequantised images in ``[0, 1)``.
    kind: ``"logit"`` or ``"center"``.
    alpha: the logit's margin, in ``(0, 0.5)``.

  Returns:
    ``(y_BxHxWxC, logdet_B)``.

  References:
    Dinh et al., "Density estimation using Real NVP", ICLR 2017, section 4.1.
  """
  if kind == "center":
    return x_BxHxWxC - 0.5, jnp.zeros(x_BxHxWxC.shape[0])
  p = alpha + (1.0 - 2.0 * alpha) * x_BxHxWxC
  y = jnp.log(p) - jnp.log1p(-p)
  return y, sum_hwc(math.log(1.0 - 2.0 * alpha) - jnp.log(p) - jnp.log1p(-p))


def postprocess(y_BxHxWxC, kind: str = "logit", alpha: float = 0.05):
  """The inverse of `preprocess` (not clipped to ``[0, 1)``)."""
  if kind == "center":
    return y_BxHxWxC + 0.5
  return (jax.nn.sigmoid(y_BxHxWxC) - alpha) / (1.0 - 2.0 * alpha)


# -------------------------------------------------------------------- steps, stacks


class FlowStep(nnx.Module):
  """One step: optional `ActNorm`, a channel mixing, then coupling(s).

  ``permutation`` is ``"none"`` (two couplings of parity 0 and 1, RealNVP's
  alternating masks), ``"reverse"`` or ``"shuffle"`` (a fixed permutation then one
  coupling), or ``"conv1x1"`` / ``"conv1x1_lu"`` (Glow's invertible 1x1 convolution
  then one coupling). ``dtype``: the couplings' conditioners' computation (None:
  float32); the rest of the step is float32.
  """

  def __init__(self, channels: int, *, actnorm: bool = True, permutation: str = "conv1x1_lu",
               mask: str = "channel", coupling: str = "affine", scale: str = "sigmoid",
               hidden: int = 64, num_blocks: int = 1, activation: str = "relu",
               dtype=None, rngs: nnx.Rngs):
    if permutation not in PERMUTATIONS:
      raise ValueError(f"permutation must be one of {', '.join(map(repr, PERMUTATIONS))}; "
                       f"got {permutation!r}")
    layers: list[Any] = [ActNorm(channels)] if actnorm else []
    if permutation in ("reverse", "shuffle"):
      layers.append(ChannelPermutation(channels, kind=permutation, rngs=rngs))
    elif permutation in ("conv1x1", "conv1x1_lu"):
      layers.append(InvertibleConv1x1(channels, lu=permutation == "conv1x1_lu", rngs=rngs))
    kw = dict(mask=mask, coupling=coupling, scale=scale, hidden=hidden,
              num_blocks=num_blocks, activation=activation, dtype=dtype, rngs=rngs)
    layers.append(AffineCoupling(channels, parity=0, **kw))
    if permutation == "none":
      layers.append(AffineCoupling(channels, parity=1, **kw))
    self.layers = nnx.List(layers)

  def forward(self, x_BxHxWxC, initialize: bool = False):
    logdet = jnp.zeros(x_BxHxWxC.shape[0])
    for layer in self.layers:
      if initialize and isinstance(layer, ActNorm):
        layer.initialize(x_BxHxWxC)
      x_BxHxWxC, ld = layer.forward(x_BxHxWxC)
      logdet = logdet + ld
    return x_BxHxWxC, logdet

  def inverse(self, y_BxHxWxC):
    for layer in reversed(self.layers):
      y_BxHxWxC = layer.inverse(y_BxHxWxC)
    return y_BxHxWxC


class FlowStack(nnx.Module):
  """``num_steps`` `FlowStep`s with stacked parameters, run by one ``lax.scan``.

  The steps are created by ``nnx.vmap`` over ``num_steps`` keys, so every leaf of
  ``self.steps`` has a leading axis of size K. `forward` and `inverse` split the
  stack into ``(graphdef, state)`` and scan over the state, merging one step per
  iteration: the step is traced once, whatever K.
  """

  def __init__(self, num_steps: int, channels: int, *, rngs: nnx.Rngs, **step_kwargs):
    keys = jax.random.split(rngs.params(), num_steps)
    self.num_steps = num_steps
    self.steps = nnx.vmap(
        lambda k: FlowStep(channels, rngs=nnx.Rngs(params=k), **step_kwargs),
        in_axes=0, out_axes=0)(keys)

  def step(self, k: int) -> FlowStep:
    """A copy of step ``k`` as its own module (for tests and inspection)."""
    graphdef, state = nnx.split(self.steps)
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[k], state))

  def forward(self, x_BxHxWxC, initialize: bool = False):
    """Runs the K steps; with ``initialize``, each step's ActNorm is initialised on
    its own input (in order, inside the scan) before it is applied."""
    graphdef, state = nnx.split(self.steps)

    def body(carry, step_state):
      x, logdet = carry
      step = nnx.merge(graphdef, step_state)
      y, ld = step.forward(x, initialize=initialize)
      return (y, logdet + ld), (nnx.state(step) if initialize else None)

    init = (x_BxHxWxC, jnp.zeros(x_BxHxWxC.shape[0]))
    (y, logdet), new_state = jax.lax.scan(body, init, state)
    if initialize:
      nnx.update(self.steps, new_state)
    return y, logdet

  def inverse(self, y_BxHxWxC):
    graphdef, state = nnx.split(self.steps)

    def body(y, step_state):
      return nnx.merge(graphdef, step_state).inverse(y), None

    return jax.lax.scan(body, y_BxHxWxC, state, reverse=True)[0]
