"""Tests of the transposed convolutions with a fast kernel gradient (genjax/nn/transposed.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.nn import transposed


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("kernel,strides", [((4, 4), (2, 2)), ((3, 5), (2, 3)), ((2, 2), (2, 2)),
                                            ((3, 3), (1, 1))])
def test_equals_lax_conv_transpose_forward_and_gradient(padding, kernel, strides):
  x, k = _random((3, 5, 6, 4), 0), _random(kernel + (4, 7), 1)

  def reference(x, k):
    return jax.lax.conv_transpose(x, k, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))

  y_ref, vjp_ref = jax.vjp(reference, x, k)
  y, vjp = jax.vjp(lambda x, k: transposed.conv_transpose(x, k, strides, padding), x, k)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  g = _random(y.shape, 2)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  if jax.default_backend() == "cpu":  # the custom gradient is the CPU's
    assert "custom_vjp_call" in str(jax.make_jaxpr(
        lambda x, k: transposed.conv_transpose(x, k, strides, padding))(x, k))


def test_apply_equals_the_layer():
  layer = nnx.ConvTranspose(4, 6, (4, 4), strides=(2, 2), padding="SAME", rngs=nnx.Rngs(0))
  layer.bias[...] = _random((6,), 3)
  x = _random((2, 7, 7, 4), 4)
  np.testing.assert_allclose(transposed.apply(layer, x), layer(x), rtol=1e-5, atol=1e-5)
  circular = nnx.ConvTranspose(4, 6, (4, 4), strides=(2, 2), padding="CIRCULAR",
                               rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="'SAME' or 'VALID'"):
    transposed.apply(circular, x)
