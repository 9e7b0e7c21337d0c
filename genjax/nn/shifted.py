"""Down-shifted and down-right-shifted convolutions (PixelCNN++), strided and transposed.

PixelCNN++ replaces masked convolutions by ordinary convolutions whose padding
keeps every output away from later pixels (raster order):

* ``"down"``: a ``kh x kw`` kernel (odd kw) padded ``kh - 1`` rows on top and
  ``kw // 2`` columns on each side: output ``(i, j)`` reads rows ``i - kh + 1 .. i``
  and columns ``j - kw // 2 .. j + kw // 2``. Fed with a map that holds only
  rows above (after `down_shift`), it sees the rows above, centred.
* ``"down_right"``: a ``kh x kw`` kernel padded ``kh - 1`` rows on top and
  ``kw - 1`` columns on the left: output ``(i, j)`` reads rows ``i - kh + 1 .. i``
  and columns ``j - kw + 1 .. j``, i.e. above and to the left.

With ``stride=2`` the same padding downsamples (output ``(r, c)`` sits at input
``(2r, 2c)`` and reads no input after it). `ShiftedConvTranspose` upsamples by a
transposed (fractionally strided) convolution with the mirrored padding: the
output at ``(p, q)`` reads only inputs ``(r, c)`` with ``2r <= p`` (and, for
``"down_right"``, ``2c <= q``), so the orders of both resolutions agree.
Kernels are HWIO, images NHWC. ``dtype=jnp.bfloat16`` computes in bfloat16 (inputs,
kernel and bias cast to it; parameters and caches stay float32); None, the default,
in the inputs' and parameters' dtype.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn.layers import kernel_init
from genjax.nn.layers import to_compute

KINDS = ("down", "down_right")
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def down_shift(x_BxHxWxC: jax.Array) -> jax.Array:
  """Moves a map one row down (zeros in row 0): row ``i`` then holds row ``i - 1``."""
  return jnp.pad(x_BxHxWxC[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def right_shift(x_BxHxWxC: jax.Array) -> jax.Array:
  """Moves a map one column right (zeros in column 0)."""
  return jnp.pad(x_BxHxWxC[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))


def _column_padding(kind: str, kw: int) -> tuple[int, int]:
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
  if kind == "down":
    if kw % 2 != 1:
      raise ValueError(f"a 'down' kernel needs an odd width, got {kw}")
    return kw // 2, kw // 2
  return kw - 1, 0


class _Shifted(nnx.Module):
  """Kernel, bias and geometry shared by the two convolutions."""

  def __init__(self, in_features: int, out_features: int, kind: str,
               kernel_size: Sequence[int], stride: int, init_scale: float, *, dtype=None,
               rngs: nnx.Rngs):
    kh, kw = (int(k) for k in kernel_size)
    self.dtype = dtype
    self.kind, self.kernel_size, self.stride = kind, (kh, kw), int(stride)
    self.columns = _column_padding(kind, kw)
    self.in_features, self.out_features = int(in_features), int(out_features)
    kernel = kernel_init()(rngs.params(), (kh, kw, in_features, out_features))
    self.kernel = nnx.Param(kernel * init_scale)
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

  def _operands(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x, kernel, bias)`` in the compute dtype."""
    return tuple(to_compute(a, self.dtype) for a in (x, self.kernel[...], self.bias[...]))

  # ------------------------------------------------------------- cached evaluation
  # Both convolutions are a stride-`_read_stride` VALID convolution over their
  # input, zero padded and (transposed) dilated by `_dilation`: the cache is that
  # padded map, filled as the inputs become known, so an output's window is a
  # plain slice of it (Ramachandran et al. 2017).

  def _dilation(self) -> int:
    return self.stride if isinstance(self, ShiftedConvTranspose) else 1

  def _read_stride(self) -> int:
    return 1 if isinstance(self, ShiftedConvTranspose) else self.stride

  def init_cache(self, batch_size: int, height: int, width: int) -> jax.Array:
    """A zero cache of this layer's padded input, for an input of ``height x width``."""
    (kh, kw), d = self.kernel_size, self._dilation()
    return jnp.zeros((batch_size, d * height + kh - 1, d * width + kw - 1, self.in_features),
                     jnp.float32)

  def write(self, cache: jax.Array, r, c, x_BxI: jax.Array) -> jax.Array:
    """Writes the input at ``(r, c)`` (traced ints) into ``cache``."""
    d = self._dilation()
    return jax.lax.dynamic_update_slice(
        cache, x_BxI[:, None, None].astype(cache.dtype),
        (0, d * r + self.kernel_size[0] - 1, d * c + self.columns[0], 0))

  def write_row(self, cache: jax.Array, r, x_BxWxI: jax.Array) -> jax.Array:
    """Writes input row ``r`` (a traced int) into ``cache``."""
    d, left = self._dilation(), self.columns[0]
    row = jnp.zeros((cache.shape[0], cache.shape[2], cache.shape[3]), cache.dtype)
    row = row.at[:, left:left + d * x_BxWxI.shape[1]:d].set(x_BxWxI.astype(cache.dtype))
    return jax.lax.dynamic_update_slice(cache, row[:, None],
                                        (0, d * r + self.kernel_size[0] - 1, 0, 0))

  def at(self, cache: jax.Array, p, q) -> jax.Array:
    """The output at ``(p, q)``, ``[B, O]``: equal to ``self(x)[:, p, q]`` once every
    input it reads is in ``cache``."""
    (kh, kw), s = self.kernel_size, self._read_stride()
    b, n = cache.shape[0], kh * kw * self.in_features
    window, kernel, bias = self._operands(
        jax.lax.dynamic_slice(cache, (0, s * p, s * q, 0), (b, kh, kw, self.in_features)))
    return window.reshape(b, n) @ kernel.reshape(n, -1) + bias

  def row_at(self, cache: jax.Array, p) -> jax.Array:
    """Output row ``p``, ``[B, W_out, O]``: equal to ``self(x)[:, p]`` once every input
    it reads is in ``cache``."""
    kh, s = self.kernel_size[0], self._read_stride()
    rows, kernel, bias = self._operands(jax.lax.dynamic_slice_in_dim(cache, s * p, kh, axis=1))
    y = jax.lax.conv_general_dilated(rows, kernel, (1, s), "VALID",
                                     dimension_numbers=_DIMENSIONS)
    return y[:, 0] + bias


class ShiftedConv(_Shifted):
  """A down- or down-right-shifted convolution, optionally strided (see module doc).

  References:
    Salimans, Karpathy, Chen & Kingma, "PixelCNN++", ICLR 2017 (section 2.4, and
    ``down_shifted_conv2d`` / ``down_right_shifted_conv2d`` of its code).
  """

  def __init__(self, in_features: int, out_features: int, kind: str,
               kernel_size: Sequence[int], *, stride: int = 1, init_scale: float = 1.0,
               dtype=None, rngs: nnx.Rngs):
    super().__init__(in_features, out_features, kind, kernel_size, stride, init_scale,
                     dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxI: jax.Array) -> jax.Array:
    """``[B, H, W, I] -> [B, H / stride, W / stride, O]`` (H, W divisible by stride)."""
    kh = self.kernel_size[0]
    x, kernel, bias = self._operands(x_BxHxWxI)
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride),
        ((kh - 1, 0), self.columns), dimension_numbers=_DIMENSIONS)
    return y + bias


class ShiftedConvTranspose(_Shifted):
  """A shifted transposed convolution that upsamples by ``stride`` (see module doc).

  Implemented as a convolution over the input dilated by ``stride`` (zeros
  between samples), which is a transposed convolution with a mirrored kernel.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017 (``down_shifted_deconv2d`` and
    ``down_right_shifted_deconv2d`` of its code).
  """

  def __init__(self, in_features: int, out_features: int, kind: str,
               kernel_size: Sequence[int], *, stride: int = 2, init_scale: float = 1.0,
               dtype=None, rngs: nnx.Rngs):
    super().__init__(in_features, out_features, kind, kernel_size, stride, init_scale,
                     dtype=dtype, rngs=rngs)

  def __call__(self, x_BxHxWxI: jax.Array) -> jax.Array:
    """``[B, H, W, I] -> [B, stride * H, stride * W, O]``."""
    (kh, kw), s = self.kernel_size, self.stride
    left, _ = self.columns
    padding = ((kh - 1, s - 1), (left, s - 1 + kw - 1 - left))
    x, kernel, bias = self._operands(x_BxHxWxI)
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), padding, lhs_dilation=(s, s),
        dimension_numbers=_DIMENSIONS)
    return y + bias
