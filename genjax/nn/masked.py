"""Masked convolutions for autoregressive image models, with per-position caches.

Pixels are generated in raster order (row by row, left to right) and, inside a
pixel, channel by channel (R, then G, then B). A `MaskedConv` sees, at output
position ``(i, j)``, only inputs that come earlier in that order:

* the kernel is anchored at ``anchor = (ah, aw)``: kernel tap ``(ah, aw)`` reads
  the input at ``(i, j)`` itself, tap ``(ah - 1, aw + 1)`` the input at
  ``(i - 1, j + 1)``, and so on;
* taps before the anchor in raster order are kept, taps after it are zeroed;
* the anchor tap itself is masked channel by channel: the features of each layer
  are split into ``num_groups`` contiguous groups (one per image channel), and
  mask ``"A"`` (the first layer) lets output group ``g`` see input groups
  ``< g``, mask ``"B"`` (later layers) groups ``<= g``;
* ``mask_type=None`` keeps every tap (the vertical stack of Gated PixelCNN).

A causal k x k convolution only needs the rows up to the anchor, so `causal`
stores a ``(k // 2 + 1) x k`` kernel anchored on its last row (the rows below,
which the mask would zero, cost nothing). Kernels are HWIO, images NHWC.

For fast sampling (Ramachandran et al. 2017), `MaskedConv.at` computes the output
at one position from a cache of the layer's earlier inputs (`init_cache`):
O(kernel) work per position instead of O(image).

On the CPU, a layer whose kernel fits the 3x3 window around its anchor (the causal
3x3 layers) computes its kernel gradient by Winograd F(4x4, 3x3)
(`genjax.nn.winograd`, where ``choose_plan`` says it is faster); its output and
input gradient stay ``lax``'s direct convolution, so causality is exact (no
rounding from later pixels) and cached sampling still equals naive sampling.

``dtype=jnp.bfloat16`` computes in bfloat16 (inputs, kernel and bias cast to it, the
output bfloat16; parameters and caches stay float32); None, the default, computes in
the inputs' and parameters' dtype.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genjax.nn import winograd
from genjax.nn.layers import kernel_init
from genjax.nn.layers import to_compute

MASK_TYPES = ("A", "B", None)
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def channel_groups(num_features: int, num_groups: int, tiles: int = 1) -> np.ndarray:
  """The colour group of each feature: ``num_groups`` contiguous groups, tiled.

  Args:
    num_features: features per tile.
    num_groups: image channels (1 for grey, 3 for RGB).
    tiles: copies of the grouping side by side (2 for the two halves of a gate).

  Returns:
    ``int[tiles * num_features]`` group ids in ``0 .. num_groups - 1``.
  """
  if num_features < num_groups:
    raise ValueError(f"{num_features} features cannot hold {num_groups} channel groups; "
                     f"use at least {num_groups} features")
  return np.tile(np.arange(num_features) * num_groups // num_features, tiles)


def causal_mask(kernel_size: Sequence[int], anchor: Sequence[int], in_groups: np.ndarray,
                out_groups: np.ndarray, mask_type: str | None) -> np.ndarray:
  """The 0/1 mask ``float32[kh, kw, I, O]`` of a masked convolution (see module doc).

  Args:
    kernel_size: ``(kh, kw)``.
    anchor: the tap ``(ah, aw)`` that reads the output's own position.
    in_groups: ``int[I]`` channel group of each input feature.
    out_groups: ``int[O]`` channel group of each output feature.
    mask_type: ``"A"`` (strict at the anchor), ``"B"`` (inclusive) or ``None``.

  Returns:
    The mask, a numpy array (a constant under ``jax.jit``).

  References:
    van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
    ICML 2016 (section 3.4 and figure 4, masks A and B).
  """
  kh, kw = kernel_size
  ah, aw = anchor
  if mask_type not in MASK_TYPES:
    raise ValueError(f"mask_type must be 'A', 'B' or None, got {mask_type!r}")
  mask = np.ones((kh, kw, len(in_groups), len(out_groups)), np.float32)
  if mask_type is None:
    return mask
  before = (np.arange(kh)[:, None] < ah) | (
      (np.arange(kh)[:, None] == ah) & (np.arange(kw)[None, :] < aw))
  mask *= before[:, :, None, None]
  in_g, out_g = np.asarray(in_groups)[:, None], np.asarray(out_groups)[None, :]
  mask[ah, aw] = (out_g > in_g) if mask_type == "A" else (out_g >= in_g)
  return mask


class MaskedConv(nnx.Module):
  """A stride-1 masked convolution (NHWC, HWIO) with bias; see the module doc.

  The mask is applied to the kernel inside every call, so the masked taps get
  zero gradients and stay irrelevant. A 1x1 layer also accepts ``[..., I]``
  inputs (it is then a masked dense layer), which the cached samplers use.
  ``dtype``: the computation's (see the module doc).
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int],
               anchor: Sequence[int], mask_type: str | None, *, num_groups: int = 1,
               out_tiles: int = 1, dtype=None, rngs: nnx.Rngs):
    kh, kw = (int(k) for k in kernel_size)
    ah, aw = (int(a) for a in anchor)
    if not (0 <= ah < kh and 0 <= aw < kw):
      raise ValueError(f"anchor {tuple(anchor)} is outside the {kh}x{kw} kernel")
    self.kernel_size, self.anchor = (kh, kw), (ah, aw)
    self.mask_type = mask_type
    self.num_groups, self.out_tiles = int(num_groups), int(out_tiles)
    self.in_features, self.out_features = int(in_features), int(out_features)
    if out_features % out_tiles:
      raise ValueError(f"out_features={out_features} is not divisible by out_tiles={out_tiles}")
    self.mask()  # validates the groups now rather than at the first call
    self.premasked = False  # set by `premask`: the kernel already holds its mask
    self.dtype = dtype
    self.kernel = nnx.Param(kernel_init()(rngs.params(), (kh, kw, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))

  def mask(self) -> np.ndarray:
    """The mask ``float32[kh, kw, I, O]`` (a numpy constant)."""
    return causal_mask(
        self.kernel_size, self.anchor,
        channel_groups(self.in_features, self.num_groups),
        channel_groups(self.out_features // self.out_tiles, self.num_groups, self.out_tiles),
        self.mask_type)

  def masked_kernel(self) -> jax.Array:
    """The kernel times its mask (the kernel itself after `premask`)."""
    if self.premasked:
      return self.kernel[...]
    return self.kernel[...] * self.mask()

  def _operands(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(x, masked kernel, bias)`` in the compute dtype."""
    return tuple(to_compute(a, self.dtype)
                 for a in (x, self.masked_kernel(), self.bias[...]))

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[B, H, W, I] -> [B, H, W, O]``, output ``(i, j)`` aligned with the anchor.

    A 1x1 layer maps ``[..., I] -> [..., O]`` for any leading axes."""
    x, kernel, bias = self._operands(x)
    if self.kernel_size == (1, 1):
      return x @ kernel[0, 0] + bias
    (kh, kw), (ah, aw) = self.kernel_size, self.anchor
    pads = ((ah, kh - 1 - ah), (aw, kw - 1 - aw))
    if max(max(p) for p in pads) <= 1:  # inside the 3x3 window around the anchor
      plan = winograd.choose_plan(x.shape, (3, 3) + kernel.shape[2:])
      if plan is not None and plan.kernel_grad:
        # Only the kernel gradient by Winograd: the output and the input gradient
        # stay exactly causal (no rounding from later pixels), and sampling equal.
        return winograd.conv3x3(x, kernel, (0, 0, plan.kernel_grad), pads) + bias
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DIMENSIONS)
    return y + bias

  # ------------------------------------------------------------- cached evaluation

  def init_cache(self, batch_size: int, height: int, width: int,
                 dtype=jnp.float32) -> jax.Array:
    """A zero cache ``[B, H + kh - 1, W + kw - 1, I]`` of this layer's inputs.

    The input at ``(r, c)`` lives at ``(r + kh - 1, c + aw)``; the unwritten
    border is the zero padding of `__call__`, so the window of output ``(i, j)``
    is the plain slice at ``(i, j)``. (A ring buffer of the last kh rows would
    be smaller, but needs a gather per step that costs more than these images'
    memory on a CPU.)"""
    kh, kw = self.kernel_size
    return jnp.zeros((batch_size, height + kh - 1, width + kw - 1, self.in_features), dtype)

  def _check_cacheable(self):
    if self.anchor[0] != self.kernel_size[0] - 1:
      raise ValueError("cached evaluation needs the anchor on the kernel's last row "
                       f"(kernel {self.kernel_size}, anchor {self.anchor})")

  def write(self, cache: jax.Array, i, j, x_BxI: jax.Array) -> jax.Array:
    """Writes the layer's input at ``(i, j)`` into ``cache`` (see `init_cache`)."""
    self._check_cacheable()
    return jax.lax.dynamic_update_slice(
        cache, x_BxI[:, None, None, :].astype(cache.dtype),
        (0, i + self.kernel_size[0] - 1, j + self.anchor[1], 0))

  def at(self, cache: jax.Array, i, j, x_BxI: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes the input at ``(i, j)`` into ``cache`` and returns the output there.

    Equal to ``self(x)[:, i, j]`` once every input at or before ``(i, j)`` (in
    raster order) has been written, whatever the later inputs: they are masked.
    Costs O(kh * kw * I * O) whatever the image size.

    Args:
      cache: the cache of `init_cache`.
      i: row (a traced int).
      j: column (a traced int).
      x_BxI: the layer's input at ``(i, j)``.

    Returns:
      ``(y_BxO, cache)``.

    References:
      Ramachandran et al., "Fast Generation for Convolutional Autoregressive
      Models", ICLR 2017 workshop (per-layer caches of earlier activations).
    """
    kh, kw = self.kernel_size
    cache = self.write(cache, i, j, x_BxI)
    b, n = cache.shape[0], kh * kw * self.in_features
    window_BxN, kernel, bias = self._operands(jax.lax.dynamic_slice(
        cache, (0, i, j, 0), (b, kh, kw, self.in_features)).reshape(b, n))
    return window_BxN @ kernel.reshape(n, self.out_features) + bias, cache

  def row_at(self, cache: jax.Array, i, x_BxWxI: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Writes input row ``i`` into ``cache`` and returns output row ``i``, ``[B, W, O]``.

    Equal to ``self(x)[:, i]`` when the anchor row is the last kernel row and every
    row up to ``i`` has been written (for unmasked layers whose anchor row sees
    the whole row, such as Gated PixelCNN's vertical stack). O(W * kernel) work.
    """
    self._check_cacheable()
    kh, aw = self.kernel_size[0], self.anchor[1]
    cache = jax.lax.dynamic_update_slice(
        cache, x_BxWxI[:, None].astype(cache.dtype), (0, i + kh - 1, aw, 0))
    rows_BxKhxWpxI, kernel, bias = self._operands(
        jax.lax.dynamic_slice_in_dim(cache, i, kh, axis=1))
    y = jax.lax.conv_general_dilated(rows_BxKhxWpxI, kernel, (1, 1), "VALID",
                                     dimension_numbers=_DIMENSIONS)
    return y[:, 0] + bias, cache


def premask(module: nnx.Module) -> nnx.Module:
  """A copy of ``module`` whose `MaskedConv` kernels are multiplied by their masks once.

  The cached samplers call every layer once per sub-pixel inside a ``lax.scan``;
  XLA does not hoist the ``kernel * mask`` products out of that loop, so without
  this each step recomputes every masked kernel. The copy gives the same outputs
  (it is meant for sampling, not training: the original keeps its parameters).
  """
  module = nnx.clone(module)
  for _, layer in nnx.iter_graph(module):
    if isinstance(layer, MaskedConv) and not layer.premasked:
      layer.kernel = nnx.Param(layer.masked_kernel())
      layer.premasked = True
  return module


def causal(in_features: int, out_features: int, kernel_size: int, mask_type: str, *,
           num_groups: int = 1, out_tiles: int = 1, dtype=None,
           rngs: nnx.Rngs) -> MaskedConv:
  """A PixelCNN k x k masked convolution, stored as its ``(k // 2 + 1) x k`` upper part.

  Args:
    in_features: input channels.
    out_features: output channels.
    kernel_size: odd k (1 gives a masked 1x1 layer).
    mask_type: ``"A"`` or ``"B"``.
    num_groups: colour channels of the image (3 for RGB).
    out_tiles: output groups tiled this many times (2 for a gate's two halves).
    dtype: the computation's (None: the inputs' and parameters').
    rngs: initialisation randomness.

  Returns:
    The `MaskedConv`.

  References:
    van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
    ICML 2016 (section 3.4).
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  p = kernel_size // 2
  return MaskedConv(in_features, out_features, (p + 1, kernel_size), (p, p), mask_type,
                    num_groups=num_groups, out_tiles=out_tiles, dtype=dtype, rngs=rngs)
