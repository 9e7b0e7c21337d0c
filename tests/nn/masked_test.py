"""Tests of the masked convolutions and their caches (genjax/nn/masked.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.nn import masked

_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _random(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_grey_masks_a_and_b():
  a = masked.causal_mask((2, 3), (1, 1), np.zeros(1, int), np.zeros(1, int), "A")[..., 0, 0]
  b = masked.causal_mask((2, 3), (1, 1), np.zeros(1, int), np.zeros(1, int), "B")[..., 0, 0]
  np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0]])
  full = masked.causal_mask((3, 3), (1, 1), np.zeros(1, int), np.zeros(1, int), "B")[..., 0, 0]
  np.testing.assert_array_equal(full, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


def test_colour_channel_masks_r_then_g_then_b():
  groups = masked.channel_groups(3, 3)
  np.testing.assert_array_equal(groups, [0, 1, 2])
  a = masked.causal_mask((1, 1), (0, 0), groups, groups, "A")[0, 0]  # [in, out]
  b = masked.causal_mask((1, 1), (0, 0), groups, groups, "B")[0, 0]
  np.testing.assert_array_equal(a, [[0, 1, 1], [0, 0, 1], [0, 0, 0]])  # R->G,B; G->B
  np.testing.assert_array_equal(b, [[1, 1, 1], [0, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(masked.channel_groups(7, 3), [0, 0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(masked.channel_groups(2, 2, tiles=2), [0, 1, 0, 1])
  with pytest.raises(ValueError, match="at least 3 features"):
    masked.channel_groups(2, 3)


def test_causal_kernel_equals_full_kernel_with_the_same_taps():
  small = masked.causal(3, 6, 5, "A", num_groups=3, rngs=nnx.Rngs(0))
  full = masked.MaskedConv(3, 6, (5, 5), (2, 2), "A", num_groups=3, rngs=nnx.Rngs(1))
  full.kernel[...] = jnp.pad(small.kernel[...], ((0, 2), (0, 0), (0, 0), (0, 0)))
  x = _random((2, 6, 7, 3))
  np.testing.assert_allclose(small(x), full(x), atol=1e-5)
  assert small.kernel.shape == (3, 5, 3, 6)


def test_single_layer_causality_by_gradient():
  layer = masked.causal(3, 6, 3, "A", num_groups=3, rngs=nnx.Rngs(0))
  x = _random((1, 4, 4, 3))
  # output (i, j) = (2, 1), colour group 1 (G: features 2, 3)
  jac = jax.grad(lambda v: layer(v)[0, 2, 1, 2:4].sum())(x)[0]
  nonzero = np.abs(np.asarray(jac)) > 0
  for i in range(4):
    for j in range(4):
      for c in range(3):
        earlier = (i, j) < (2, 1) or ((i, j) == (2, 1) and c < 1)
        in_window = 1 <= i <= 2 and 0 <= j <= 2
        assert nonzero[i, j, c] == (earlier and in_window), (i, j, c)


@pytest.mark.parametrize("kernel, anchor, mask_type, groups", [
    ((3, 5), (2, 2), "B", 3),   # a causal 5x5
    ((1, 3), (0, 2), "A", 1),   # a horizontal stack
    ((2, 3), (1, 1), "B", 1),   # a causal 3x3
])
def test_at_equals_the_full_convolution_at_every_position(kernel, anchor, mask_type, groups):
  layer = masked.MaskedConv(6, 4, kernel, anchor, mask_type, num_groups=groups,
                            rngs=nnx.Rngs(0))
  x = _random((2, 5, 4, 6), seed=1)
  full = layer(x)

  @_jit
  def cached(x):
    def body(cache, t):
      i, j = t // 4, t % 4
      y, cache = layer.at(cache, i, j, x[:, i, j])
      return cache, y
    return jax.lax.scan(body, layer.init_cache(2, 5, 4), jnp.arange(20))[1]

  np.testing.assert_allclose(cached(x), full.transpose(1, 2, 0, 3).reshape(20, 2, 4),
                             atol=1e-5)


def test_row_at_equals_the_full_convolution_row_by_row():
  layer = masked.MaskedConv(3, 4, (3, 5), (2, 2), None, rngs=nnx.Rngs(0))
  x = _random((2, 6, 5, 3), seed=2)

  @_jit
  def cached(x):
    def body(cache, i):
      y, cache = layer.row_at(cache, i, x[:, i])
      return cache, y
    return jax.lax.scan(body, layer.init_cache(2, 6, 5), jnp.arange(6))[1]

  np.testing.assert_allclose(cached(x), layer(x).transpose(1, 0, 2, 3), atol=1e-5)


def test_premask_copies_the_model_with_the_masks_applied_once():
  layer = masked.causal(3, 6, 3, "A", num_groups=3, rngs=nnx.Rngs(0))
  x = _random((2, 5, 4, 3), seed=3)
  frozen = masked.premask(layer)
  assert frozen.premasked and not layer.premasked  # the original is untouched
  np.testing.assert_array_equal(frozen.kernel[...], layer.kernel[...] * layer.mask())
  np.testing.assert_allclose(frozen(x), layer(x), atol=1e-6)


def test_bad_arguments_are_clear_errors():
  with pytest.raises(ValueError, match="odd"):
    masked.causal(1, 4, 4, "A", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="mask_type"):
    masked.causal(1, 4, 3, "C", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="outside"):
    masked.MaskedConv(1, 4, (2, 3), (2, 1), "A", rngs=nnx.Rngs(0))
  full = masked.MaskedConv(1, 4, (3, 3), (1, 1), "A", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="last row"):
    full.at(full.init_cache(1, 4, 4), 0, 0, jnp.zeros((1, 1)))
