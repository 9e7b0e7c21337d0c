"""Invertible layers of normalizing flows (RealNVP, Glow) and their shared protocol.

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
compile time does not grow with K.

The second half holds the protocol shared by the flow families (``genjax.models.realnvp``
and ``genjax.models.glow``): a model has ``forward(x, initialize=False) -> (zs, logdet_B)``
from the dequantised image ``x`` in ``[0, 1)`` to a list of standard-normal latents,
``inverse(zs) -> x`` and the static ``input_shape`` and ``latent_shapes``.

References:
  Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
  Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
  NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genjax import distributions as dist
from genjax.nn.layers import get_activation

MASKS = ("checkerboard", "channel")
COUPLINGS = ("affine", "additive")
SCALES = ("sigmoid", "tanh")
PERMUTATIONS = ("none", "reverse", "shuffle", "conv1x1", "conv1x1_lu")
PREPROCESSING = ("logit", "center")
TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)


class FlowBuffer(nnx.Variable):
  """A fixed, non-trainable array of a flow layer (a permutation, the LU's P and sign)."""


class Initialized(nnx.Variable):
  """A bool flag: ActNorm's data-dependent initialisation has run (checkpointed)."""


def _sum_hwc(x_BxHxWxC: jax.Array) -> jax.Array:
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
    self.bias[...] = jnp.where(done, self.bias[...], -mean_C)
    self.log_scale_param[...] = jnp.where(done, self.log_scale_param[...], param_C)
    self.initialized[...] = jnp.ones((), jnp.bool_)


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x_BxHxWxI, kernel_KxKxIxO):
  return jax.lax.conv_general_dilated(x_BxHxWxI, kernel_KxKxIxO, (1, 1), "SAME",
                                      dimension_numbers=_DIMENSIONS)


@jax.custom_vjp
def conv_same(x_BxHxWxI: jax.Array, kernel_KxKxIxO: jax.Array) -> jax.Array:
  """A stride-1 SAME convolution (NHWC, HWIO, odd K) whose gradients stay fast in loops.

  XLA's CPU backend runs the kernel-gradient convolution that ``lax`` derives ~30x
  slower inside a while loop (a ``lax.scan`` over flow steps) than outside it
  (jax-ml/jax#12868: only channel-last convolutions take the fast path there). This
  custom VJP computes the input gradient as a channel-last convolution with the
  flipped kernel and the kernel gradient as matrix products: one per kernel tap, or,
  when one side has few channels, a single one against its K*K stacked shifts.
  Reverse mode only (use ``jax.jacrev``, not ``jax.jacfwd``, through it).
  """
  return _conv(x_BxHxWxI, kernel_KxKxIxO)


def _conv_same_fwd(x, kernel):
  return _conv(x, kernel), (x, kernel)


def _conv_same_bwd(res, g_BxHxWxO):
  x_BxHxWxI, kernel = res
  k, _, c_in, c_out = kernel.shape
  h, w, p = x_BxHxWxI.shape[1], x_BxHxWxI.shape[2], kernel.shape[0] // 2
  grad_x = _conv(g_BxHxWxO, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  pad = ((0, 0), (p, p), (p, p), (0, 0))
  if min(c_in, c_out) * k * k <= 2 * max(c_in, c_out):
    # Skinny: stack the k*k shifts of the side with fewer channels, one matmul.
    if c_out <= c_in:  # grad_kernel[i, j] = x^T g shifted by (p - i, p - j)
      g_pad = jnp.pad(g_BxHxWxO, pad)
      shifts = [g_pad[:, 2 * p - i:2 * p - i + h, 2 * p - j:2 * p - j + w]
                for i in range(k) for j in range(k)]
      out = x_BxHxWxI.reshape(-1, c_in).T @ jnp.concatenate(shifts, -1).reshape(-1, k * k * c_out)
      return grad_x, out.reshape(c_in, k, k, c_out).transpose(1, 2, 0, 3)
    x_pad = jnp.pad(x_BxHxWxI, pad)
    shifts = [x_pad[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]
    out = jnp.concatenate(shifts, -1).reshape(-1, k * k * c_in).T @ g_BxHxWxO.reshape(-1, c_out)
    return grad_x, out.reshape(k, k, c_in, c_out)
  x_pad, g_NxO = jnp.pad(x_BxHxWxI, pad), g_BxHxWxO.reshape(-1, c_out)
  grad_kernel = jnp.stack([
      jnp.stack([x_pad[:, i:i + h, j:j + w].reshape(-1, c_in).T @ g_NxO for j in range(k)])
      for i in range(k)])
  return grad_x, grad_kernel


conv_same.defvjp(_conv_same_fwd, _conv_same_bwd)


class Conv(nnx.Module):
  """A stride-1 SAME convolution with bias built on `conv_same` (fast gradients in scans).

  ``zero_init=True`` is Glow's ``Conv2dZeros``: kernel and bias start at zero and the
  output is multiplied by a learned per-channel ``exp(3 * log_gain)`` (``log_gain``
  starts at 0), so the layer starts at zero and can grow quickly.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
               zero_init: bool = False, rngs: nnx.Rngs):
    if kernel_size % 2 != 1:
      raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    shape = (kernel_size, kernel_size, in_channels, out_channels)
    init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
    self.zero_init = zero_init
    if zero_init:
      self.log_gain = nnx.Param(jnp.zeros((out_channels,), jnp.float32))

  def __call__(self, x_BxHxWxI):
    y = conv_same(x_BxHxWxI, self.kernel[...]) + self.bias[...]
    return y * jnp.exp(3.0 * self.log_gain[...]) if self.zero_init else y


class ResBlock(nnx.Module):
  """Pre-activation residual block ``x + conv(act(conv(act(x))))``, second conv zero."""

  def __init__(self, channels: int, *, activation: str = "relu", rngs: nnx.Rngs):
    self.conv1 = Conv(channels, channels, 3, rngs=rngs)
    self.conv2 = Conv(channels, channels, 3, zero_init=True, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC):
    return x_BxHxWxC + self.conv2(self.activation(self.conv1(self.activation(x_BxHxWxC))))


class ConvResNet(nnx.Module):
  """Coupling conditioner: conv3x3, act, conv1x1, ``num_blocks`` ResBlocks, act, conv3x3.

  With ``num_blocks=0`` this is Glow's ``NN`` (without its ActNorms). The last
  convolution starts at zero (kernel and bias), so a coupling layer starts as the
  identity (Glow's ``Conv2dZeros``).
  """

  def __init__(self, in_channels: int, hidden: int, out_channels: int, *,
               num_blocks: int = 1, activation: str = "relu", rngs: nnx.Rngs):
    self.conv_in = Conv(in_channels, hidden, 3, rngs=rngs)
    self.conv_mid = Conv(hidden, hidden, 1, rngs=rngs)
    self.blocks = nnx.List([ResBlock(hidden, activation=activation, rngs=rngs)
                            for _ in range(num_blocks)])
    self.conv_out = Conv(hidden, out_channels, 3, zero_init=True, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC):
    h = self.conv_mid(self.activation(self.conv_in(x_BxHxWxC)))
    for block in self.blocks:
      h = block(h)
    return self.conv_out(self.activation(h))


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
  """

  def __init__(self, channels: int, *, mask: str = "channel", parity: int = 0,
               coupling: str = "affine", scale: str = "sigmoid", hidden: int = 64,
               num_blocks: int = 1, activation: str = "relu", rngs: nnx.Rngs):
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
                          activation=activation, rngs=rngs)
    if coupling == "affine" and scale == "tanh":
      self.tanh_scale = nnx.Param(jnp.ones((self.num_trans,), jnp.float32))

  def _split(self, x):
    n = self.channels // 2 if self.parity == 0 else self.channels - self.channels // 2
    first, second = x[..., :n], x[..., n:]
    return (first, second) if self.parity == 0 else (second, first)  # (cond, trans)

  def _join(self, cond, trans):
    return jnp.concatenate([cond, trans] if self.parity == 0 else [trans, cond], -1)

  def _shift_log_scale(self, cond):
    out = self.net(cond)
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
      return y, _sum_hwc((1 - m) * log_s)
    cond, trans = self._split(x_BxHxWxC)
    shift, log_s = self._shift_log_scale(cond)
    return self._join(cond, trans * jnp.exp(log_s) + shift), _sum_hwc(log_s)

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
  and ``logdet = -sum(log_scale)``, so ``log N(z) + logdet = log p(x_b | x_a)``.
  """

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    self.num_keep = channels // 2
    out = channels - self.num_keep
    self.conv = Conv(self.num_keep, 2 * out, 3, zero_init=True, rngs=rngs)

  def _mean_log_scale(self, keep):
    out = self.conv(keep)
    n = out.shape[-1] // 2
    return out[..., :n], out[..., n:]

  def forward(self, x_BxHxWxC):
    keep, drop = x_BxHxWxC[..., :self.num_keep], x_BxHxWxC[..., self.num_keep:]
    mean, log_scale = self._mean_log_scale(keep)
    return keep, (drop - mean) * jnp.exp(-log_scale), -_sum_hwc(log_scale)

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
  return y, _sum_hwc(math.log(1.0 - 2.0 * alpha) - jnp.log(p) - jnp.log1p(-p))


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
  then one coupling).
  """

  def __init__(self, channels: int, *, actnorm: bool = True, permutation: str = "conv1x1_lu",
               mask: str = "channel", coupling: str = "affine", scale: str = "sigmoid",
               hidden: int = 64, num_blocks: int = 1, activation: str = "relu",
               rngs: nnx.Rngs):
    if permutation not in PERMUTATIONS:
      raise ValueError(f"permutation must be one of {', '.join(map(repr, PERMUTATIONS))}; "
                       f"got {permutation!r}")
    layers: list[Any] = [ActNorm(channels)] if actnorm else []
    if permutation in ("reverse", "shuffle"):
      layers.append(ChannelPermutation(channels, kind=permutation, rngs=rngs))
    elif permutation in ("conv1x1", "conv1x1_lu"):
      layers.append(InvertibleConv1x1(channels, lu=permutation == "conv1x1_lu", rngs=rngs))
    kw = dict(mask=mask, coupling=coupling, scale=scale, hidden=hidden,
              num_blocks=num_blocks, activation=activation, rngs=rngs)
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


# ------------------------------------------------------------ the family protocol


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
  from genjax.models import parse_fields  # pylint: disable=g-import-not-at-top
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
        f"{x_BxHxWxC.dtype}; use genjax.nn.flows.dequantize(image_uint8, key) first")


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
  return logdet_B + sum(_sum_hwc(dist.standard_normal_log_prob(z)) for z in zs)


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


@jax.jit(static_argnums=0)
def _initialize_jit(graphdef, state, image_BxHxWxC, key):
  model = nnx.merge(graphdef, state)
  model.forward(dequantize(image_BxHxWxC, key), initialize=True)
  return nnx.state(model)


def initialize(model, image_BxHxWxC, key: jax.Array) -> None:
  """Data-dependent ActNorm initialisation on one dequantised batch, in place.

  Runs ``model.forward(x, initialize=True)`` compiled: every ActNorm, in the order
  of the flow (a scan through each stack), is set to give zero mean and unit
  variance per channel on its own input. ActNorms already initialised (their
  ``initialized`` flag is set, e.g. after a restore) keep their values.

  Args:
    model: a flow model.
    image_BxHxWxC: uint8 images, 0..255.
    key: PRNG key of the dequantisation noise.

  References:
    Kingma & Dhariwal, "Glow", NeurIPS 2018, section 3.1.
  """
  graphdef, state = nnx.split(model)
  nnx.update(model, _initialize_jit(graphdef, state, jnp.asarray(image_BxHxWxC), key))
