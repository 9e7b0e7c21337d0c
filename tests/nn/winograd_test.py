"""Tests of the Winograd convolutions (genjax/nn/winograd.py) and where they are used."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax import nn
from genjax.nn import conditioner
from genjax.nn import dense
from genjax.nn import masked
from genjax.nn import winograd


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _close(a, b, rtol):
  """Equal up to ``rtol`` of b's largest magnitude (the float32 rounding of sums)."""
  scale = float(jnp.max(jnp.abs(b)))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("m", winograd.TILES)
def test_one_dimensional_minimal_filtering_is_exact(m):
  bt, g, at = winograd.matrices(m)
  rng = np.random.default_rng(m)
  d, k = rng.normal(size=m + 2), rng.normal(size=3)
  expected = np.array([d[i:i + 3] @ k for i in range(m)])  # correlation, as in lax.conv
  np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("plan", [4, 2, (0, 0, 4), (4, 2, 0), (2, 4, 2)])
@pytest.mark.parametrize("shape", [(2, 9, 11, 5, 7), (1, 28, 28, 16, 16), (3, 7, 4, 2, 3)])
def test_conv3x3_equals_lax_forward_and_gradient(plan, shape):
  b, h, w, i, o = shape
  x, k = _random((b, h, w, i), 0), _random((3, 3, i, o), 1) / np.sqrt(9 * i)
  g = _random((b, h, w, o), 2)
  y, vjp = jax.vjp(lambda x, k: winograd.conv3x3(x, k, plan), x, k)
  y_ref, vjp_ref = jax.vjp(winograd.direct3x3, x, k)
  _close(y, y_ref, 1e-5)
  for got, want in zip(vjp(g), vjp_ref(g)):
    _close(got, want, 1e-5)


@pytest.mark.parametrize("padding", [((1, 0), (1, 1)), ((0, 0), (1, 0)), ((1, 1), (0, 1))])
def test_kernels_inside_the_window_equal_lax_with_their_padding(padding):
  (t, bo), (l, r) = padding
  x = _random((2, 8, 9, 6), 3)
  k = _random((t + bo + 1, l + r + 1, 6, 5), 4)
  g = _random((2, 8, 9, 5), 5)
  direct = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
      x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y_ref, vjp_ref = jax.vjp(direct, x, k)
  for plan in (4, (0, 0, 4), (0, 2, 2)):
    y, vjp = jax.vjp(lambda x, k: winograd.conv3x3(x, k, plan, padding), x, k)
    _close(y, y_ref, 1e-5)
    for got, want in zip(vjp(g), vjp_ref(g)):
      assert got.shape == want.shape
      _close(got, want, 1e-5)


def test_bad_plans_and_windows_are_named():
  x, k = jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match="tiles must be 0"):
    winograd.conv3x3(x, k, 3)
  with pytest.raises(ValueError, match="3x3 window"):
    winograd.conv3x3(x, jnp.zeros((5, 5, 2, 2)), 4, ((2, 2), (2, 2)))


def test_plan_only_on_the_cpu_for_3x3_kernels_with_enough_channels(monkeypatch):
  big, kernel = (64, 28, 28, 64), (3, 3, 64, 64)
  assert winograd.choose_plan(big, kernel, "cpu") is not None
  assert winograd.choose_plan(big, kernel, "gpu") is None
  assert winograd.choose_plan(big, kernel, "tpu") is None
  assert winograd.choose_plan(big, (5, 5, 64, 64), "cpu") is None
  assert winograd.choose_plan(big, (1, 1, 64, 64), "cpu") is None
  assert winograd.choose_plan((64, 28, 28, 2), (3, 3, 2, 64), "cpu") is None  # skinny
  assert winograd.choose_plan((64, 14, 14, 16), (3, 3, 16, 16), "cpu") is None  # little work
  assert winograd.choose_plan((64, 14, 14, 32), (3, 3, 32, 32), "cpu") == (0, 0, 4)
  monkeypatch.setattr(winograd, "ENABLED", False)
  assert winograd.choose_plan(big, kernel, "cpu") is None
  monkeypatch.setattr(winograd, "ENABLED", True)
  monkeypatch.setattr(dense, "CPU_CUSTOM_GRADIENTS", False)
  assert winograd.choose_plan(big, kernel, "cpu") is None


def _uses_winograd(fn, *args) -> bool:
  return "custom_vjp_call" in str(jax.make_jaxpr(fn)(*args))


def _with_and_without_winograd(fn, *args, monkeypatch):
  """``(fn's value and gradients by Winograd, the same by lax)``."""
  assert _uses_winograd(fn, *args)
  got = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
  monkeypatch.setattr(winograd, "ENABLED", False)
  want = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
  monkeypatch.setattr(winograd, "ENABLED", True)
  return got, want


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the Winograd path is CPU-only")
def test_models_layers_take_the_path_and_agree_with_lax(monkeypatch):
  monkeypatch.setattr(winograd, "MIN_WORK", 0)  # small shapes take the path too
  x = _random((4, 28, 28, 16), 6)
  # nn.conv (nnx.Conv): diffusion's U-Net, the dVAE, the classifier.
  layer = nn.conv(16, 16, 3, rngs=nnx.Rngs(0))
  params = nnx.state(layer, nnx.Param)
  graphdef = nnx.graphdef(layer)

  def conv_loss(params, x):
    return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

  (v, (gp, gx)), (v_ref, (gp_ref, gx_ref)) = _with_and_without_winograd(
      conv_loss, params, x, monkeypatch=monkeypatch)
  _close(v, v_ref, 1e-5)
  _close(gx, gx_ref, 1e-5)
  _close(gp["kernel"][...], gp_ref["kernel"][...], 1e-5)
  # conditioner.conv_same: the flows' coupling networks (inside lax.scan).
  kernel = _random((3, 3, 16, 16), 7)

  def flow_loss(kernel, x):
    def body(h, _):
      return conditioner.conv_same(h, kernel) / 10, None
    return jnp.sum(jax.lax.scan(body, x, None, length=2)[0] ** 2)

  (v, grads), (v_ref, grads_ref) = _with_and_without_winograd(
      flow_loss, kernel, x, monkeypatch=monkeypatch)
  _close(v, v_ref, 1e-5)
  for got, want in zip(grads, grads_ref):
    _close(got, want, 1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the Winograd path is CPU-only")
def test_masked_layers_stay_exactly_causal_with_winograd_kernel_gradients(monkeypatch):
  monkeypatch.setattr(winograd, "MIN_WORK", 0)
  layer = masked.causal(16, 16, 3, "B", rngs=nnx.Rngs(0))
  x = _random((4, 28, 28, 16), 8)
  params, graphdef = nnx.state(layer, nnx.Param), nnx.graphdef(layer)

  def loss(params, x):
    return jnp.sum(nnx.merge(graphdef, params)(x)[:, 5, 7] ** 2)

  (v, (gp, gx)), (v_ref, (gp_ref, gx_ref)) = _with_and_without_winograd(
      loss, params, x, monkeypatch=monkeypatch)
  # The output and the input gradient are lax's own (bit for bit); only the kernel
  # gradient goes through Winograd, and its masked taps stay exactly zero.
  assert v == v_ref
  np.testing.assert_array_equal(gx, gx_ref)
  _close(gp["kernel"][...], gp_ref["kernel"][...], 1e-5)
  assert not np.any(np.asarray(gp["kernel"][...])[1, 2])  # the masked tap (i, j + 1)
  later = np.asarray(jnp.abs(gx[:, 5, 8:]).sum() + jnp.abs(gx[:, 6:]).sum())
  assert later == 0  # nothing after (5, 7) in raster order reaches the output there
