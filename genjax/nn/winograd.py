"""Winograd fast 3x3 convolutions: fewer multiplications, as transforms and batched matmuls.

A stride-1 3x3 convolution computes each ``m x m`` tile of its output from an
``(m + 2) x (m + 2)`` tile of its input. Winograd's minimal filtering algorithm
F(m x m, 3 x 3) (Lavin & Gray 2016) does it in the transformed domain:

    Y = A^T [ (G g G^T) * (B^T d B) ] A

``(m + 2)^2`` multiplications per tile and channel pair instead of ``9 m^2``:
0.44x the direct convolution's for ``m = 2``, 0.25x for ``m = 4``. Summed over the
input channels, the element-wise product becomes ``(m + 2)^2`` matrix products
``[tiles, I] x [I, O]``, large and dense, which is where CPUs and accelerators
are fast; the transforms are additions with small constants.

`conv3x3` is differentiable through a custom VJP that stays in that domain:

* the input gradient is the same convolution of the output gradient with the
  kernel turned by 180 degrees and its channels swapped (a SAME 3x3 convolution's
  transpose is one), computed by the same algorithm;
* the kernel gradient is ``G^T [ sum_tiles (B^T d B)^T (A dY A^T) ] G``:
  ``(m + 2)^2`` products ``[I, tiles] x [tiles, O]`` instead of nine
  ``[I, B H W] x [B H W, O]`` ones, 4x fewer multiply-adds for ``m = 4``. On
  XLA's CPU backend the direct kernel gradient is the slowest product of a
  convolution's train step (~3x its forward pass): its long contractions run on
  one core (a ``[64, 50176] x [50176, 64]`` product: 48 GFLOP/s with one core or
  two, against ~140 for ``[50176, 64] x [64, 64]``).

`choose_plan` says where it is used: the layers (``nnx.Conv`` through
`conv_general_dilated`, the flows' ``conditioner.conv_same``, the masked
convolutions) ask it for a plan: on the CPU they compute the kernel
gradient of 3x3 convolutions with enough work by F(4x4, 3x3) and everything else
directly: that is where ``experiments/benchmarks/conv_speed.py`` measured Winograd
faster on the README's CPU (an Intel Xeon); its forward pass and input gradient were not, at
these sizes, against XLA's direct convolution.

Precision: F(4x4, 3x3) has constants up to 8 and 1/24; in float32 its results
differ from the direct convolution's by ~1e-6 relative to the output's scale,
F(2x2, 3x3) by less (see ``tests/nn/winograd_test.py``).

References:
  Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

# (B^T, G, A^T) of F(m, 3) for the interpolation points 0, +-1 (m = 2) and
# 0, +-1, +-2 (m = 4), both with the point at infinity (Lavin & Gray 2016, eq. 8-9).
_MATRICES = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                 np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}
TILES = tuple(_MATRICES)


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(B^T, G, A^T)`` of F(m, 3), float64 numpy arrays."""
  if m not in _MATRICES:
    raise ValueError(f"tile must be one of {TILES}, got {m!r}")
  return _MATRICES[m]


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
  """``out_i = sum_r matrix[i, r] * parts[r]``, skipping zeros and unit factors."""
  out = []
  for row in matrix:
    acc = None
    for coeff, part in zip(row, parts):
      if coeff == 0:
        continue
      term = part if coeff == 1 else -part if coeff == -1 else part * coeff.astype(part.dtype)
      acc = term if acc is None else acc + term
    out.append(acc)
  return out


def _input_transform(x_BxHxWxC: jax.Array, m: int) -> jax.Array:
  """``B^T d B`` of every overlapping input tile: ``[(m + 2)^2, tiles, C]``.

  Tile ``(s, t)`` reads padded rows ``m s .. m s + m + 1`` and the same columns;
  the input is zero padded by one on the top and left (SAME for 3x3) and enough on
  the bottom and right to fill the last tile.
  """
  bt = matrices(m)[0]
  b, h, w, c = x_BxHxWxC.shape
  nh, nw = -(-h // m), -(-w // m)
  a = m + 2
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, m * nh + 1 - h), (1, m * nw + 1 - w), (0, 0)))

  def along(z, axis, n):
    parts = [jax.lax.slice_in_dim(z, r, r + m * (n - 1) + 1, m, axis) for r in range(a)]
    return _combine(bt, parts)

  rows = along(xp, 1, nh)  # a x [B, nh, Wp, C]
  v = jnp.stack([jnp.stack(along(r, 2, nw)) for r in rows])  # [a, a, B, nh, nw, C]
  return v.reshape(a * a, b * nh * nw, c)


def _gradient_transform(g_BxHxWxO: jax.Array, m: int) -> jax.Array:
  """``A dY A^T`` of every output tile (they do not overlap): ``[(m + 2)^2, tiles, O]``."""
  at = matrices(m)[2]
  b, h, w, o = g_BxHxWxO.shape
  nh, nw = -(-h // m), -(-w // m)
  g = jnp.pad(g_BxHxWxO, ((0, 0), (0, m * nh - h), (0, m * nw - w), (0, 0)))
  rows = _combine(at.T, [g[:, r::m] for r in range(m)])  # a x [B, nh, W', O]
  z = jnp.stack([jnp.stack(_combine(at.T, [r[:, :, c::m] for c in range(m)])) for r in rows])
  a = m + 2
  return z.reshape(a * a, b * nh * nw, o)


def _output_transform(m_KxTxO: jax.Array, m: int, shape: tuple[int, ...]) -> jax.Array:
  """``A^T M A`` of every tile, the tiles put back in place: ``[B, H, W, O]``."""
  at = matrices(m)[2]
  b, h, w = shape
  nh, nw = -(-h // m), -(-w // m)
  a = m + 2
  o = m_KxTxO.shape[-1]
  mm = m_KxTxO.reshape(a, a, b, nh, nw, o)
  rows = _combine(at, [mm[i] for i in range(a)])  # m x [a, B, nh, nw, O]
  y = jnp.stack([jnp.stack(_combine(at, [r[j] for j in range(a)])) for r in rows])
  y = y.transpose(2, 3, 0, 4, 1, 5).reshape(b, m * nh, m * nw, o)  # [B, nh, m, nw, m, O]
  return y[:, :h, :w]


def _kernel_transform(kernel_3x3xIxO: jax.Array, m: int) -> jax.Array:
  """``G g G^T``: ``[(m + 2)^2, I, O]`` (computed in float64 constants, exact)."""
  g = matrices(m)[1].astype(np.float32)
  u = jnp.einsum("ia,abco,jb->ijco", g, kernel_3x3xIxO, g,
                 precision=jax.lax.Precision.HIGHEST)
  a = m + 2
  return u.reshape(a * a, *kernel_3x3xIxO.shape[2:])


class Plan(NamedTuple):
  """How `conv3x3` computes each of its three products: a Winograd tile ``m`` (2 or
  4) or 0 for the direct convolution (``lax``)."""
  forward: int = 4
  input_grad: int = 4
  kernel_grad: int = 4


def _as_plan(plan) -> Plan:
  plan = Plan(plan, plan, plan) if isinstance(plan, int) else Plan(*plan)
  for tile in plan:
    if tile and tile not in TILES:
      raise ValueError(f"Winograd tiles must be 0 (direct) or one of {TILES}, got {plan}")
  return plan


SAME = ((1, 1), (1, 1))


def _window(padding):
  """``((top, bottom), (left, right))`` as ints, each 0 or 1: the kernel's place in
  the 3x3 window around the output's own position."""
  padding = tuple((int(a), int(b)) for a, b in padding)
  if len(padding) != 2 or not all(0 <= p <= 1 for pair in padding for p in pair):
    raise ValueError(f"padding must place the kernel inside a 3x3 window "
                     f"(each side 0 or 1), got {padding}")
  return padding


def _embed(kernel, padding):
  """The kernel placed in its 3x3 window, zeros elsewhere."""
  return jnp.pad(kernel, tuple((1 - a, 1 - b) for a, b in padding) + ((0, 0), (0, 0)))


def _crop(kernel_3x3, padding):
  (t, b), (l, r) = padding
  return kernel_3x3[1 - t:2 + b, 1 - l:2 + r]


def _direct(x, kernel, padding):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                      dimension_numbers=_DIMENSIONS)


def _winograd(x, kernel_3x3, tile):
  """``(output, input transform)`` of the SAME 3x3 convolution by F(tile, 3)."""
  v = _input_transform(x, tile)
  u = _kernel_transform(kernel_3x3, tile).astype(v.dtype)
  return _output_transform(jnp.einsum("ktc,kco->kto", v, u), tile, x.shape[:3]), v


def _convolve(x, kernel, padding, tile):
  """The convolution by F(tile, 3) (the kernel embedded in 3x3), or directly (tile 0)."""
  return _winograd(x, _embed(kernel, padding), tile)[0] if tile else _direct(x, kernel, padding)


def _kernel_gradient(x, v, g, kernel_shape, padding, tile):
  """d loss / d kernel from the input (or its transform ``v``, when not None) and
  the output gradient."""
  if not tile:
    zero = jnp.zeros(kernel_shape, x.dtype)
    return jax.vjp(lambda k: _direct(x, k, padding), zero)[1](g)[0]
  if v is None:
    v = _input_transform(x, tile)
  du = jnp.einsum("ktc,kto->kco", v, _gradient_transform(g, tile).astype(v.dtype))
  a = tile + 2
  gm = matrices(tile)[1].astype(np.float32)
  grad = jnp.einsum("ia,ijco,jb->abco", gm, du.reshape(a, a, *du.shape[1:]), gm,
                    precision=jax.lax.Precision.HIGHEST)
  return _crop(grad, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv3x3(x_BxHxWxI: jax.Array, kernel: jax.Array, plan=Plan(),
            padding=SAME) -> jax.Array:
  """A stride-1 convolution (NHWC, HWIO) inside a 3x3 window, by Winograd F(m x m, 3 x 3).

  Equal to ``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` up to float
  rounding, forward and gradient (a custom VJP; reverse mode only). Any H and W
  (the last tiles are padded and cropped).

  Args:
    x_BxHxWxI: the input.
    kernel: ``[kh, kw, I, O]``; 3x3 with the default padding.
    plan: a `Plan` (static): the tile of the forward product, of the input
      gradient and of the kernel gradient, 0 for direct; an int uses it for all three.
    padding: ``((top, bottom), (left, right))`` (static), each 0 or 1, with
      ``kh = top + bottom + 1`` and ``kw = left + right + 1``: a kernel smaller than
      3x3 (a causal ``2 x 3`` one, say) is computed as the 3x3 kernel that holds
      it, zeros elsewhere. Default SAME for 3x3.

  Returns:
    ``[B, H, W, O]``.
  """
  padding = _window(padding)
  return _convolve(x_BxHxWxI, kernel, padding, _as_plan(plan).forward)


def _conv3x3_fwd(x, kernel, plan, padding):
  plan, padding = _as_plan(plan), _window(padding)
  if plan.forward and plan.forward == plan.kernel_grad:
    y, v = _winograd(x, _embed(kernel, padding), plan.forward)  # reused by the kernel gradient
    return y, (x, v, kernel)
  return _convolve(x, kernel, padding, plan.forward), (x, None, kernel)


def _conv3x3_bwd(plan, padding, res, g_BxHxWxO):
  plan, padding = _as_plan(plan), _window(padding)
  x, v, kernel = res
  # The input gradient is the convolution of the output gradient with the kernel
  # turned by 180 degrees, its channels swapped and the padding mirrored.
  mirrored = tuple((b, a) for a, b in padding)
  grad_x = _convolve(g_BxHxWxO, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), mirrored,
                     plan.input_grad)
  grad_k = _kernel_gradient(x, v, g_BxHxWxO, kernel.shape, padding, plan.kernel_grad)
  return grad_x.astype(x.dtype), grad_k.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


def direct3x3(x_BxHxWxI: jax.Array, kernel_3x3xIxO: jax.Array) -> jax.Array:
  """The SAME 3x3 convolution by ``lax.conv_general_dilated`` (the reference)."""
  return _direct(x_BxHxWxI, kernel_3x3xIxO, SAME)


# The smallest channel count and batch * height * width * in * out channels at which
# the layers compute kernel gradients by Winograd (conv_speed.py on the CPU the README names).
MIN_CHANNELS = 16
MIN_WORK = 8_000_000

# False: every convolution is ``lax``'s (for comparisons; read at trace time).
ENABLED = True


def choose_plan(x_shape, kernel_shape, backend: str | None = None) -> Plan | None:
  """The `Plan` of `conv3x3` for these shapes, or None for ``lax``'s convolution.

  Winograd on the CPU backend only (GPUs and TPUs have fast direct convolutions,
  and the custom VJP would forbid forward mode there) and, product by product, only
  where ``experiments/benchmarks/conv_speed.py`` measured it faster than the direct
  convolution (batch 64, on the 2-core Intel Xeon of the README's speed section).
  Like every custom-VJP path of genjax on the CPU, it follows
  ``genjax.nn.dense.CPU_CUSTOM_GRADIENTS`` (False: ``lax``'s convolution); `ENABLED`
  = False turns this path alone off.
  """
  from genjax.nn import dense  # pylint: disable=g-import-not-at-top
  backend = backend or jax.default_backend()
  if backend != "cpu" or not (ENABLED and dense.CPU_CUSTOM_GRADIENTS):
    return None
  if len(x_shape) != 4 or tuple(kernel_shape[:2]) != (3, 3):
    return None
  pixels = x_shape[0] * x_shape[1] * x_shape[2]
  c_in, c_out = kernel_shape[2], kernel_shape[3]
  # Measured (batch 64, 28x28 to 7x7, 16 to 128 channels): the direct forward pass
  # and input gradient are as fast or faster almost everywhere; F(4x4, 3x3) kernel
  # gradients are 1.3x to 4.1x faster from B*H*W*I*O = 12.8M up (28x28x16, 14x14x32,
  # 7x7x64) and slower at 3.2M (14x14x16, 7x7x32).
  if min(c_in, c_out) < MIN_CHANNELS or pixels * c_in * c_out < MIN_WORK:
    return None
  return Plan(forward=0, input_grad=0, kernel_grad=4)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """``lax.conv_general_dilated`` that takes `conv3x3` with `choose_plan`'s plan for
  the convolutions it covers (stride 1, SAME 3x3, NHWC and HWIO, no dilation, groups
  or precision argument), for ``nnx.Conv(..., conv_general_dilated=...)``."""
  args = (lhs, rhs, window_strides, padding)
  extra = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
               dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
               precision=precision, **kwargs)
  plain = (lhs.ndim == 4 and tuple(rhs.shape[:2]) == (3, 3)
           and tuple(window_strides) == (1, 1)
           and (padding == "SAME" if isinstance(padding, str)
                else [tuple(p) for p in padding] == [(1, 1), (1, 1)])
           and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
           and feature_group_count == 1 and precision is None
           and all(v is None for v in kwargs.values())
           and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSIONS))
  plan = choose_plan(lhs.shape, rhs.shape) if plain else None
  if plan is not None:
    return conv3x3(lhs, rhs, plan)
  return jax.lax.conv_general_dilated(*args, **extra)
