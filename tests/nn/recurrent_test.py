"""Tests of the PixelRNN recurrences (genjax/nn/recurrent.py) against plain loops."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from genjax.nn import recurrent


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _lstm(gates, c):  # the textbook update, i, f, o, g quarters
  i, f, o, g = np.split(gates, 4, axis=-1)
  c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
  return _sigmoid(o) * np.tanh(c), c


@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (1, 5, 2, 3), (1, 1, 3, 1)])
def test_unskew_inverts_skew_and_skew_puts_diagonals_in_columns(shape):
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  s = np.asarray(recurrent.skew(x))
  b, h, w, f = shape
  assert s.shape == (b, h, w + h - 1, f)
  for r in range(h):
    np.testing.assert_array_equal(s[:, r, r:r + w], x[:, r])
    assert not s[:, r, :r].any() and not s[:, r, r + w:].any()
  np.testing.assert_array_equal(recurrent.unskew(s, w), x)
  with pytest.raises(ValueError, match="columns"):
    recurrent.unskew(s, w + 1)


def test_row_lstm_scan_equals_a_loop_over_pixels():
  rng = np.random.default_rng(1)
  b, h, w, f, k = 2, 3, 5, 2, 3
  pre = rng.normal(size=(b, h, w, 4 * f)).astype(np.float32)
  kernel = rng.normal(size=(k, f, 4 * f)).astype(np.float32)
  hs, c = np.zeros((b, h, w, f)), np.zeros((b, w, f))
  for i in range(h):
    prev = hs[:, i - 1] if i else np.zeros((b, w, f))
    new_c = np.zeros_like(c)
    for j in range(w):
      gates = pre[:, i, j].astype(np.float64)
      for t in range(k):  # hidden row i - 1 at columns j - 1, j, j + 1
        if 0 <= j - k // 2 + t < w:
          gates = gates + prev[:, j - k // 2 + t] @ kernel[t]
      hs[:, i, j], new_c[:, j] = _lstm(gates, c[:, j])
    c = new_c
  np.testing.assert_allclose(jax.jit(recurrent.row_lstm)(pre, kernel), hs, atol=1e-5)


def test_diagonal_lstm_scan_over_skewed_columns_equals_a_loop_over_pixels():
  """The state at (r, j) reads the states at (r - 1, j) and (r, j - 1), per direction."""
  rng = np.random.default_rng(2)
  d, b, h, w, f = 2, 2, 4, 3, 2
  pre = rng.normal(size=(d, b, h, w, 4 * f)).astype(np.float32)
  kernel = rng.normal(size=(d, 2, f, 4 * f)).astype(np.float32)
  hs, cs = np.zeros((d, b, h, w, f)), np.zeros((d, b, h, w, f))
  for r in range(h):
    for j in range(w):
      gates = pre[:, :, r, j].astype(np.float64)
      c_prev = np.zeros((d, b, f))
      if r:
        gates = gates + np.einsum("dbf,dfg->dbg", hs[:, :, r - 1, j], kernel[:, 0])
      if j:
        gates = gates + np.einsum("dbf,dfg->dbg", hs[:, :, r, j - 1], kernel[:, 1])
      # the memory follows the left neighbour: the previous step of the column scan
      c_prev = cs[:, :, r, j - 1] if j else c_prev
      hs[:, :, r, j], cs[:, :, r, j] = _lstm(gates, c_prev)
  np.testing.assert_allclose(jax.jit(recurrent.diagonal_lstm)(pre, kernel), hs, atol=1e-5)
