"""Tests of the cached evaluation of the shifted convolutions (genjax/nn/shifted.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.nn import shifted

_LAYERS = [  # (class, kind, kernel, stride)
    (shifted.ShiftedConv, "down", (2, 3), 1),
    (shifted.ShiftedConv, "down", (1, 3), 1),
    (shifted.ShiftedConv, "down_right", (2, 2), 1),
    (shifted.ShiftedConv, "down_right", (2, 1), 1),
    (shifted.ShiftedConv, "down", (2, 3), 2),
    (shifted.ShiftedConv, "down_right", (2, 2), 2),
    (shifted.ShiftedConvTranspose, "down", (2, 3), 2),
    (shifted.ShiftedConvTranspose, "down_right", (2, 2), 2),
]


@pytest.mark.parametrize("cls, kind, kernel, stride", _LAYERS)
def test_cached_outputs_equal_the_full_convolution(cls, kind, kernel, stride):
  """`at` and `row_at` from a cache filled by `write` / `write_row` equal `__call__`."""
  layer = cls(3, 5, kind, kernel, stride=stride, rngs=nnx.Rngs(0))
  layer.bias[...] = jnp.arange(5.0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 6, 3)), jnp.float32)
  want = np.asarray(layer(x))
  by_rows = layer.init_cache(2, 4, 6)
  by_pixels = layer.init_cache(2, 4, 6)
  for r in range(4):
    by_rows = layer.write_row(by_rows, r, x[:, r])
    for c in range(6):
      by_pixels = layer.write(by_pixels, r, c, x[:, r, c])
  np.testing.assert_array_equal(by_rows, by_pixels)
  for p in range(want.shape[1]):
    np.testing.assert_allclose(layer.row_at(by_rows, p), want[:, p], rtol=1e-5, atol=1e-5)
    for q in range(want.shape[2]):
      np.testing.assert_allclose(layer.at(by_rows, p, q), want[:, p, q], rtol=1e-5,
                                 atol=1e-5)


def test_cached_output_ignores_inputs_not_yet_written():
  """A down-right output at (p, q) is final once the inputs up to it in raster order
  are written: the unwritten later inputs are zeros it does not read."""
  layer = shifted.ShiftedConv(2, 3, "down_right", (2, 2), rngs=nnx.Rngs(1))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 3, 4, 2)), jnp.float32)
  want = np.asarray(layer(x))
  cache = layer.init_cache(1, 3, 4)
  for r in range(3):
    for c in range(4):
      cache = layer.write(cache, r, c, x[:, r, c])
      np.testing.assert_allclose(layer.at(cache, r, c), want[:, r, c], rtol=1e-5, atol=1e-5)
  assert jax.tree.leaves(cache)[0].shape == (1, 4, 5, 2)
