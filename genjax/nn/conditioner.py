"""Stride-1 convolutions whose gradients stay fast inside compiled loops, and the
small convolutional ResNet that flow couplings use as their conditioner.

References:
  Kingma & Dhariwal, "Glow: Generative flow with invertible 1x1 convolutions",
  NeurIPS 2018 (``Conv2dZeros``, the coupling ``NN``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn import dense
from genjax.nn import winograd
from genjax.nn.layers import get_activation
from genjax.nn.layers import to_compute

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv(x_BxHxWxI, kernel_KxKxIxO):
  return jax.lax.conv_general_dilated(x_BxHxWxI, kernel_KxKxIxO, (1, 1), "SAME",
                                      dimension_numbers=_DIMENSIONS)


def conv_same(x_BxHxWxI: jax.Array, kernel_KxKxIxO: jax.Array) -> jax.Array:
  """A stride-1 SAME convolution (NHWC, HWIO, odd K) whose gradients stay fast in loops.

  XLA's CPU backend runs the kernel-gradient convolution that ``lax`` derives ~30x
  slower inside a while loop (a ``lax.scan`` over flow steps) than outside it
  (jax-ml/jax#12868: only channel-last convolutions take the fast path there). This
  custom VJP computes the input gradient as a channel-last convolution with the
  flipped kernel and the kernel gradient as matrix products: one per kernel tap, or,
  when one side has few channels, a single one against its K*K stacked shifts.
  3x3 convolutions with enough channels take `genjax.nn.winograd.conv3x3` instead
  (Winograd kernel gradients, also matrix products, where they are faster).
  The custom VJP is used on the CPU backend only (GPUs and TPUs get the plain
  convolution, which forward mode differentiates too); on the CPU it is reverse mode
  only (``jax.jvp``/``jacfwd`` raise JAX's custom-VJP error) unless
  ``genjax.nn.dense.CPU_CUSTOM_GRADIENTS`` is set to False before tracing.
  """
  plan = winograd.choose_plan(x_BxHxWxI.shape, kernel_KxKxIxO.shape)
  if plan is not None:
    return winograd.conv3x3(x_BxHxWxI, kernel_KxKxIxO, plan)
  if dense.use_cpu_custom_gradients():
    return _conv_same_cpu(x_BxHxWxI, kernel_KxKxIxO)
  return _conv(x_BxHxWxI, kernel_KxKxIxO)


@jax.custom_vjp
def _conv_same_cpu(x_BxHxWxI, kernel_KxKxIxO):
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


_conv_same_cpu.defvjp(_conv_same_fwd, _conv_same_bwd)


class Conv(nnx.Module):
  """A stride-1 SAME convolution with bias built on `conv_same` (fast gradients in scans).

  ``zero_init=True`` is Glow's ``Conv2dZeros``: kernel and bias start at zero and the
  output is multiplied by a learned per-channel ``exp(3 * log_gain)`` (``log_gain``
  starts at 0), so the layer starts at zero and can grow quickly. ``dtype``: the
  computation's (input, kernel, bias and gain cast to it; parameters float32); None
  computes in the inputs' and parameters' dtype.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
               zero_init: bool = False, dtype=None, rngs: nnx.Rngs):
    if kernel_size % 2 != 1:
      raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    shape = (kernel_size, kernel_size, in_channels, out_channels)
    init = nnx.initializers.zeros_init() if zero_init else nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32))
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32))
    self.zero_init, self.dtype = zero_init, dtype
    if zero_init:
      self.log_gain = nnx.Param(jnp.zeros((out_channels,), jnp.float32))

  def __call__(self, x_BxHxWxI):
    x, kernel, bias = (to_compute(a, self.dtype)
                       for a in (x_BxHxWxI, self.kernel[...], self.bias[...]))
    y = conv_same(x, kernel) + bias
    if not self.zero_init:
      return y
    return y * to_compute(jnp.exp(3.0 * self.log_gain[...]), self.dtype)


class ResBlock(nnx.Module):
  """Pre-activation residual block ``x + conv(act(conv(act(x))))``, second conv zero."""

  def __init__(self, channels: int, *, activation: str = "relu", dtype=None,
               rngs: nnx.Rngs):
    self.conv1 = Conv(channels, channels, 3, dtype=dtype, rngs=rngs)
    self.conv2 = Conv(channels, channels, 3, zero_init=True, dtype=dtype, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC):
    return x_BxHxWxC + self.conv2(self.activation(self.conv1(self.activation(x_BxHxWxC))))


class ConvResNet(nnx.Module):
  """Coupling conditioner: conv3x3, act, conv1x1, ``num_blocks`` ResBlocks, act, conv3x3.

  With ``num_blocks=0`` this is Glow's ``NN`` (without its ActNorms). The last
  convolution starts at zero (kernel and bias), so a coupling layer starts as the
  identity (Glow's ``Conv2dZeros``). Every convolution computes in ``dtype`` (None:
  the inputs' and parameters'), so does the output.
  """

  def __init__(self, in_channels: int, hidden: int, out_channels: int, *,
               num_blocks: int = 1, activation: str = "relu", dtype=None,
               rngs: nnx.Rngs):
    self.conv_in = Conv(in_channels, hidden, 3, dtype=dtype, rngs=rngs)
    self.conv_mid = Conv(hidden, hidden, 1, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([ResBlock(hidden, activation=activation, dtype=dtype, rngs=rngs)
                            for _ in range(num_blocks)])
    self.conv_out = Conv(hidden, out_channels, 3, zero_init=True, dtype=dtype, rngs=rngs)
    self.activation = get_activation(activation)

  def __call__(self, x_BxHxWxC):
    h = self.conv_mid(self.activation(self.conv_in(x_BxHxWxC)))
    for block in self.blocks:
      h = block(h)
    return self.conv_out(self.activation(h))
