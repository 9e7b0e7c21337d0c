"""Transposed (fractionally strided) convolutions with a fast kernel gradient on the CPU.

``nnx.ConvTranspose`` computes ``lax.conv_transpose``: a convolution of the input
dilated by the stride (zeros between its pixels). On XLA's CPU backend the kernel
gradient that ``lax`` derives for it is very slow: for DCGAN's 64 -> 64 channel
upsampling from 14x14 to 28x28 at batch 64 it took ~5 s, against ~0.07 s for the
forward pass, and dominated the GAN's train step. `conv_transpose` computes the
same function with a custom VJP whose kernel gradient is one matrix product per
kernel tap, ``x_shifted^T @ dY`` over the outputs that tap reaches from a real
(not inserted) input pixel; the forward pass and the
input gradient are ``lax``'s. `apply` runs an ``nnx.ConvTranspose`` layer through
it (same parameters, same result). GPUs and TPUs keep ``lax``'s own gradient, as
does ``genjax.nn.dense.CPU_CUSTOM_GRADIENTS = False``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn import dense

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def padding(kernel_size, strides, padding_name: str) -> tuple[tuple[int, int], ...]:
  """The explicit padding of the dilated input for ``lax.conv_transpose``'s
  ``"SAME"`` or ``"VALID"`` (its own rule, per spatial axis)."""
  out = []
  for k, s in zip(kernel_size, strides):
    if padding_name == "SAME":
      total = k + s - 2
      before = k - 1 if s > k - 1 else -(-total // 2)
    elif padding_name == "VALID":
      total = k + s - 2 + max(k - s, 0)
      before = k - 1
    else:
      raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding_name!r}")
    out.append((before, total - before))
  return tuple(out)


def _lax(x, kernel, strides, pads):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, lhs_dilation=strides,
                                      dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _custom(x, kernel, strides, pads):
  return _lax(x, kernel, strides, pads)


def _fwd(x, kernel, strides, pads):
  return _lax(x, kernel, strides, pads), (x, kernel)


def _bwd(strides, pads, res, g_BxHxWxO):
  x, kernel = res
  grad_x = jax.vjp(lambda x: _lax(x, kernel, strides, pads), x)[1](g_BxHxWxO)[0]
  kh, kw, c_in, c_out = kernel.shape
  # Tap (i, j) meets a non-zero (input) pixel of the dilated input only at the
  # outputs of one phase (r = lo - i mod s): the rest of its product is zeros, so
  # each tap multiplies the input, shifted, by that phase's sub-grid of the gradient.
  margin = max(kh, kw)
  xp = jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
  (lo_h, _), (lo_w, _) = pads
  (s_h, s_w), (h, w) = strides, g_BxHxWxO.shape[1:3]

  def tap(i, j):
    r0, c0 = (lo_h - i) % s_h, (lo_w - j) % s_w
    g_sub = g_BxHxWxO[:, r0::s_h, c0::s_w]
    t, u = (r0 + i - lo_h) // s_h + margin, (c0 + j - lo_w) // s_w + margin
    x_sub = xp[:, t:t + g_sub.shape[1], u:u + g_sub.shape[2]]
    return x_sub.reshape(-1, c_in).T @ g_sub.reshape(-1, c_out)

  grad_k = jnp.stack([jnp.stack([tap(i, j) for j in range(kw)]) for i in range(kh)])
  return grad_x, grad_k.astype(kernel.dtype)


_custom.defvjp(_fwd, _bwd)


def conv_transpose(x_BxHxWxI: jax.Array, kernel_KhxKwxIxO: jax.Array, strides,
                   padding_name: str = "SAME") -> jax.Array:
  """``lax.conv_transpose(x, kernel, strides, padding_name)`` (NHWC, HWIO, kernel not
  flipped, as ``nnx.ConvTranspose``), with the fast kernel gradient on the CPU."""
  strides = tuple(int(s) for s in strides)
  pads = padding(kernel_KhxKwxIxO.shape[:2], strides, padding_name)
  if dense.use_cpu_custom_gradients():
    return _custom(x_BxHxWxI, kernel_KhxKwxIxO, strides, pads)
  return _lax(x_BxHxWxI, kernel_KhxKwxIxO, strides, pads)


def apply(layer: nnx.ConvTranspose, x: jax.Array) -> jax.Array:
  """``layer(x)`` for a 2-D ``nnx.ConvTranspose`` with string padding, no mask and
  no kernel dilation, through `conv_transpose`."""
  if (layer.mask is not None or not isinstance(layer.padding, str)
      or layer.kernel_dilation not in (None, 1, (1, 1)) or layer.transpose_kernel):
    raise ValueError("transposed.apply covers 2-D ConvTranspose layers with 'SAME' or "
                     "'VALID' padding, no mask, kernel dilation or transpose_kernel")
  kernel = layer.kernel[...]
  bias = layer.bias[...] if layer.bias is not None else None
  x, kernel, bias = layer.promote_dtype((x, kernel, bias), dtype=layer.dtype)
  strides = layer.strides if isinstance(layer.strides, tuple) else (layer.strides,) * 2
  y = conv_transpose(x, kernel, strides, layer.padding)
  return y if bias is None else y + bias
