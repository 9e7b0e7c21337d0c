"""Two-dimensional LSTM layers of PixelRNN: Row LSTM and Diagonal BiLSTM (NHWC).

Both layers split an LSTM into an input-to-state part, a masked convolution of the
layer's input computed for the whole map at once (`genjax.nn.masked`, mask B with
the R, G, B channel groups), and a state-to-state part, an unmasked convolution of
the previous step's hidden state inside a ``jax.lax.scan``:

* `RowLSTM`: the scan runs over rows; row ``i`` reads a masked ``1 x (k//2 + 1)``
  convolution of input row ``i`` (columns ``<= j``) and a ``1 x k`` convolution of
  hidden row ``i - 1``. The state at ``(i, j)`` sees the inputs at ``(i - d, j - d p
  .. j + d p)``, ``p = k // 2``, through the state, so its receptive field is a
  triangle above the pixel (figure 2 of the paper).
* `DiagonalBiLSTM`: the map is skewed (`skew`: row ``r`` shifted right by ``r``)
  so that each column of the skewed map is a diagonal of the image; the scan runs
  over the skewed columns with a 2x1 state-to-state kernel, so the state at
  ``(r, j)`` reads the states at ``(r - 1, j)`` and ``(r, j - 1)``: it sees every
  pixel above-left. A second direction runs on the left-right mirrored map (so it
  sees every pixel above-right, and the pixels right of ``(r, j)`` on its own row);
  its output map is shifted down one row before the two are added, so the sum at
  ``(r, j)`` sees every earlier pixel and no later one: no blind spot.

The state-to-state kernels may mix all channel groups: they only read positions
strictly before the current pixel (the previous row, the left or upper
neighbour), where every channel is already known. The LSTM update is elementwise
per unit, so a unit of group ``g`` keeps the channel order of its gates.
Outside the image (the skew's padding) states are held at zero.

``dtype=jnp.bfloat16`` computes the gates (both convolutions) and the hidden states
in bfloat16, with float32 parameters; the cell states, which accumulate along the
scan, stay float32. None, the default, computes in the inputs' and parameters' dtype.

References:
  van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
  ICML 2016 (sections 3.1 and 3.2, figure 2 and 3).
  Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.nn import masked
from genjax.nn.layers import at_least_float32
from genjax.nn.layers import kernel_init
from genjax.nn.layers import to_compute


def lstm_update(gates_Nx4F: jax.Array, c_NxF: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One LSTM step from pre-activations ``[..., 4F]`` (i, f, o, g quarters).

  Returns:
    ``(h, c)``, both ``[..., F]``: ``c' = s(f) c + s(i) tanh(g)``, ``h = s(o) tanh(c')``;
    ``h`` in the gates' dtype, ``c'`` in the wider of theirs and ``c``'s (float32 cell
    states stay float32 under bfloat16 gates).
  """
  i, f, o, g = jnp.split(gates_Nx4F, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c_NxF + jax.nn.sigmoid(i) * jnp.tanh(g)
  return (jax.nn.sigmoid(o) * jnp.tanh(c)).astype(gates_Nx4F.dtype), c


def _zero_states(shape, dtype) -> tuple[jax.Array, jax.Array]:
  """Zero ``(h, c)``: ``h`` in ``dtype``, ``c`` in at least float32."""
  h = jnp.zeros(shape, dtype)
  return h, at_least_float32(h)


def skew(x_BxHxWxF: jax.Array) -> jax.Array:
  """Shifts row ``r`` right by ``r``: ``[B, H, W, F] -> [B, H, W + H - 1, F]``.

  ``out[:, r, r + j] = x[:, r, j]``, zeros elsewhere; column ``t`` of the result holds
  the diagonal ``r + j = t`` of ``x``. Pads each row with H zeros, flattens the rows
  and re-cuts them one element shorter (no gather).
  """
  b, h, w, f = x_BxHxWxF.shape
  y = jnp.pad(x_BxHxWxF, ((0, 0), (0, 0), (0, h), (0, 0))).reshape(b, h * (w + h), f)
  return y[:, :h * (w + h - 1)].reshape(b, h, w + h - 1, f)


def unskew(s_BxHxLxF: jax.Array, width: int) -> jax.Array:
  """The inverse of `skew`: ``[B, H, W + H - 1, F] -> [B, H, W, F]``, ``x[r, j] = s[r, r + j]``.

  Flattens the rows, pads H zeros and re-cuts them one element longer."""
  b, h, l, f = s_BxHxLxF.shape
  if l != width + h - 1:
    raise ValueError(f"a skewed map of height {h} and width {width} has {width + h - 1} "
                     f"columns, got {l}")
  y = jnp.pad(s_BxHxLxF.reshape(b, h * l, f), ((0, 0), (0, h), (0, 0)))
  return y.reshape(b, h, l + 1, f)[:, :, :width]


def row_lstm(pre_BxHxWx4F: jax.Array, kernel_KxFx4F: jax.Array) -> jax.Array:
  """The Row LSTM recurrence: a ``lax.scan`` over rows, whole rows at once.

  Args:
    pre_BxHxWx4F: input-to-state pre-activations of every position.
    kernel_KxFx4F: the ``1 x k`` state-to-state kernel ``[k, F, 4F]`` (odd k,
      centred: row ``i`` at column ``j`` reads hidden row ``i - 1`` at ``j - k//2 ..
      j + k//2``, zero-padded).

  Returns:
    The hidden states ``[B, H, W, F]`` (zero state before row 0).
  """
  b, _, w, f4 = pre_BxHxWx4F.shape
  p = kernel_KxFx4F.shape[0] // 2

  def step(carry, pre_BxWx4F):
    h_BxWxF, c_BxWxF = carry
    s_BxWx4F = jax.lax.conv_general_dilated(h_BxWxF, kernel_KxFx4F, (1,), ((p, p),),
                                            dimension_numbers=("NWC", "WIO", "NWC"))
    h_BxWxF, c_BxWxF = lstm_update(pre_BxWx4F + s_BxWx4F, c_BxWxF)
    return (h_BxWxF, c_BxWxF), h_BxWxF

  zeros = _zero_states((b, w, f4 // 4), pre_BxHxWx4F.dtype)
  _, h_HxBxWxF = jax.lax.scan(step, zeros, jnp.moveaxis(pre_BxHxWx4F, 1, 0))
  return jnp.moveaxis(h_HxBxWxF, 0, 1)


def diagonal_lstm(pre_DxBxHxWx4F: jax.Array, kernel_Dx2xFx4F: jax.Array) -> jax.Array:
  """The Diagonal LSTM recurrence of ``D`` independent directions in one ``lax.scan``.

  The state at ``(r, j)`` reads the hidden states at ``(r - 1, j)`` (kernel tap 0)
  and ``(r, j - 1)`` (tap 1), zero outside the image: after `skew` these are rows
  ``r - 1`` and ``r`` of the previous skewed column, a 2x1 convolution.

  Args:
    pre_DxBxHxWx4F: input-to-state pre-activations of every position, per direction.
    kernel_Dx2xFx4F: the 2x1 state-to-state kernels.

  Returns:
    The hidden states ``[D, B, H, W, F]``.
  """
  d, b, h, w, f4 = pre_DxBxHxWx4F.shape
  pre = skew(pre_DxBxHxWx4F.reshape(d * b, h, w, f4))
  pre_LxDxBxHx4F = jnp.moveaxis(pre.reshape(d, b, h, w + h - 1, f4), 3, 0)
  valid_LxHx1 = jnp.moveaxis(skew(jnp.ones((1, h, w, 1), pre.dtype))[0], 1, 0)

  def step(carry, xs):
    h_DxBxHxF, c_DxBxHxF = carry
    pre_DxBxHx4F, valid_Hx1 = xs
    up_DxBxHxF = jnp.pad(h_DxBxHxF[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0)))
    gates = (pre_DxBxHx4F
             + jnp.einsum("dbhf,dfg->dbhg", up_DxBxHxF, kernel_Dx2xFx4F[:, 0])
             + jnp.einsum("dbhf,dfg->dbhg", h_DxBxHxF, kernel_Dx2xFx4F[:, 1]))
    h_DxBxHxF, c_DxBxHxF = lstm_update(gates, c_DxBxHxF)
    h_DxBxHxF, c_DxBxHxF = h_DxBxHxF * valid_Hx1, c_DxBxHxF * valid_Hx1
    return (h_DxBxHxF, c_DxBxHxF), h_DxBxHxF

  zeros = _zero_states((d, b, h, f4 // 4), pre.dtype)
  _, h_LxDxBxHxF = jax.lax.scan(step, zeros, (pre_LxDxBxHx4F, valid_LxHx1))
  h_skewed = jnp.moveaxis(h_LxDxBxHxF, 0, 3).reshape(d * b, h, w + h - 1, f4 // 4)
  return unskew(h_skewed, w).reshape(d, b, h, w, f4 // 4)


def _state_kernel(shape, rngs: nnx.Rngs, directions: int = 0) -> nnx.Param:
  """A fan-in initialised state-to-state kernel ``shape``, stacked per direction if any."""
  if not directions:
    return nnx.Param(kernel_init()(rngs.params(), shape))
  return nnx.Param(jnp.stack([kernel_init()(rngs.params(), shape) for _ in range(directions)]))


class RowLSTM(nnx.Module):
  """A Row LSTM layer ``[B, H, W, I] -> [B, H, W, F]`` (see the module doc).

  Args:
    in_features: I.
    features: F, the LSTM units (at least ``num_groups``).
    kernel_size: odd k of the ``1 x k`` state-to-state convolution; the
      input-to-state convolution is its causal half ``1 x (k // 2 + 1)``, mask B.
    num_groups: image channels (the colour groups of the masks).
    dtype: the computation's (see the module doc).
    rngs: initialisation randomness.
  """

  def __init__(self, in_features: int, features: int, kernel_size: int, num_groups: int,
               *, dtype=None, rngs: nnx.Rngs):
    p = kernel_size // 2
    self.input_to_state = masked.MaskedConv(in_features, 4 * features, (1, p + 1), (0, p),
                                            "B", num_groups=num_groups, out_tiles=4,
                                            dtype=dtype, rngs=rngs)
    self.state_to_state = _state_kernel((kernel_size, features, 4 * features), rngs)
    self.dtype = dtype

  def __call__(self, x_BxHxWxI: jax.Array) -> jax.Array:
    return row_lstm(self.input_to_state(x_BxHxWxI),
                    to_compute(self.state_to_state[...], self.dtype))

  # ------------------------------------------------------------- cached evaluation

  def init_cache(self, batch_size: int, height: int, width: int) -> dict:
    """Zero caches for `at` and `end_row`: the input rows, hidden and cell rows.

    ``h_*`` rows are zero-padded by ``k // 2`` columns on both sides (the
    state-to-state window of column ``j`` is then the plain slice at ``j``);
    ``*_prev`` hold row ``i - 1`` (zero before row 0), ``*_cur`` row ``i``.
    """
    k, f = self.state_to_state[...].shape[:2]
    h = jnp.zeros((batch_size, width + k - 1, f), self.dtype or jnp.float32)
    c = jnp.zeros((batch_size, width, f), jnp.float32)
    return dict(input=self.input_to_state.init_cache(batch_size, height, width),
                h_prev=h, h_cur=h, c_prev=c, c_cur=c)

  def at(self, cache: dict, i, j, x_BxI: jax.Array) -> tuple[jax.Array, dict]:
    """The hidden state at ``(i, j)`` from the input there and the caches.

    Equal to ``self(x)[:, i, j]`` once the inputs at and before ``(i, j)`` have
    been passed here in raster order and `end_row` has run after each earlier
    row. O(k * I * F + k * F * F) work, whatever the image size.
    """
    kernel_KxFx4F = to_compute(self.state_to_state[...], self.dtype)
    k, f = kernel_KxFx4F.shape[:2]
    pre_Bx4F, inputs = self.input_to_state.at(cache["input"], i, j, x_BxI)
    window_BxKF = jax.lax.dynamic_slice_in_dim(cache["h_prev"], j, k, axis=1).reshape(-1, k * f)
    c_BxF = jax.lax.dynamic_index_in_dim(cache["c_prev"], j, axis=1, keepdims=False)
    h_BxF, c_BxF = lstm_update(pre_Bx4F + window_BxKF @ kernel_KxFx4F.reshape(k * f, -1),
                               c_BxF)
    cache = dict(cache, input=inputs,
                 h_cur=jax.lax.dynamic_update_slice_in_dim(cache["h_cur"], h_BxF[:, None],
                                                           j + k // 2, axis=1),
                 c_cur=jax.lax.dynamic_update_slice_in_dim(cache["c_cur"], c_BxF[:, None],
                                                           j, axis=1))
    return h_BxF, cache

  def end_row(self, cache: dict, image_BxWxC: jax.Array | None = None) -> dict:
    """Makes the finished row the previous one (``image_BxWxC`` is unused)."""
    del image_BxWxC
    return dict(cache, h_prev=cache["h_cur"], c_prev=cache["c_cur"])


class DiagonalBiLSTM(nnx.Module):
  """A Diagonal BiLSTM layer ``[B, H, W, I] -> [B, H, W, F]`` (see the module doc).

  The forward direction's input-to-state map is a 1x1 mask-B convolution; the
  backward direction's is unmasked, since its output is shifted down one row and
  so only ever reads rows above the current pixel. For the same reason the
  backward direction may read the image itself (``image_features > 0``): a layer
  whose input is a mask-A map never holds pixel ``(i, W - 1)`` at or left of
  ``(i + 1, W - 2 - k//2)`` otherwise (the mask-A ``k x k`` layer reads a pixel
  only right of it or on the rows below), so the first pixels of a row would miss
  the last pixel of the row above.

  Args:
    in_features: I.
    features: F, the LSTM units per direction (at least ``num_groups``).
    num_groups: image channels (the colour groups of the masks).
    image_features: channels of the ``image`` argument read by the backward
      direction (0: none).
    dtype: the computation's (see the module doc).
    rngs: initialisation randomness.
  """

  def __init__(self, in_features: int, features: int, num_groups: int, *,
               image_features: int = 0, dtype=None, rngs: nnx.Rngs):
    self.image_features = image_features
    self.forward_input = masked.MaskedConv(in_features, 4 * features, (1, 1), (0, 0), "B",
                                           num_groups=num_groups, out_tiles=4, dtype=dtype,
                                           rngs=rngs)
    self.backward_input = masked.MaskedConv(in_features + image_features, 4 * features,
                                            (1, 1), (0, 0), None, dtype=dtype, rngs=rngs)
    self.state_to_state = _state_kernel((2, features, 4 * features), rngs, directions=2)
    self.dtype = dtype

  def _state_kernel(self, direction: int) -> jax.Array:
    """The 2x1 state-to-state kernel of ``direction`` (0 forward, 1 backward), in the
    compute dtype."""
    return to_compute(self.state_to_state[...][direction], self.dtype)

  def __call__(self, x_BxHxWxI: jax.Array, image_BxHxWxC: jax.Array | None = None
               ) -> jax.Array:
    if (image_BxHxWxC is None) != (self.image_features == 0):
      raise ValueError(f"this layer reads an image of {self.image_features} channels; "
                       "pass image_BxHxWxC exactly when image_features > 0")
    backward_in = x_BxHxWxI if image_BxHxWxC is None else jnp.concatenate(
        [x_BxHxWxI, image_BxHxWxC], axis=-1)
    pre_2xBxHxWx4F = jnp.stack([self.forward_input(x_BxHxWxI),
                                self.backward_input(backward_in)[:, :, ::-1]])
    kernels_2x2xFx4F = to_compute(self.state_to_state[...], self.dtype)
    fwd, bwd = diagonal_lstm(pre_2xBxHxWx4F, kernels_2x2xFx4F)
    bwd = bwd[:, :, ::-1]  # mirrored back: the state at (r, j) saw columns >= j
    return fwd + jnp.pad(bwd[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))  # rows above only

  # ------------------------------------------------------------- cached evaluation

  def init_cache(self, batch_size: int, height: int, width: int) -> dict:
    """Zero caches for `at` and `end_row`.

    ``inputs``: the layer's inputs on the current row (the backward direction
    reads them at `end_row`); ``fwd_h_prev``: the forward hidden row above;
    ``fwd_h_cur`` and ``fwd_c_cur``: the forward states of the current row,
    shifted right by one column (column 0 is the zero state left of the image);
    ``bwd_h_prev``: the backward hidden row above, which is also the backward
    direction's output on the current row (shifted down one row).
    """
    del height
    f = self.state_to_state[...].shape[2]
    row = jnp.zeros((batch_size, width, f), self.dtype or jnp.float32)
    h_padded, c_padded = _zero_states((batch_size, width + 1, f), self.dtype or jnp.float32)
    return dict(inputs=jnp.zeros((batch_size, width, self.forward_input.in_features),
                                 jnp.float32),
                fwd_h_prev=row, fwd_h_cur=h_padded, fwd_c_cur=c_padded, bwd_h_prev=row)

  def at(self, cache: dict, i, j, x_BxI: jax.Array) -> tuple[jax.Array, dict]:
    """The layer's output at ``(i, j)`` from the input there and the caches.

    The forward direction takes one LSTM step from the states above and to the
    left; the backward direction's output there (row ``i - 1``) was computed by
    `end_row`. Equal to ``self(x)[:, i, j]`` once the inputs at and before ``(i,
    j)`` have been passed here in raster order and `end_row` has run after each
    earlier row. O(I * F + F * F) work, whatever the image size.
    """
    del i
    kernel = self._state_kernel(0)  # forward direction: [2 taps, F, 4F]
    take = lambda a, col: jax.lax.dynamic_index_in_dim(a, col, axis=1, keepdims=False)  # noqa: E731
    gates_Bx4F = (self.forward_input(x_BxI) + take(cache["fwd_h_prev"], j) @ kernel[0]
                  + take(cache["fwd_h_cur"], j) @ kernel[1])
    h_BxF, c_BxF = lstm_update(gates_Bx4F, take(cache["fwd_c_cur"], j))
    put = lambda a, v, col: jax.lax.dynamic_update_slice_in_dim(a, v[:, None], col, axis=1)  # noqa: E731
    cache = dict(cache, inputs=put(cache["inputs"], x_BxI.astype(jnp.float32), j),
                 fwd_h_cur=put(cache["fwd_h_cur"], h_BxF, j + 1),
                 fwd_c_cur=put(cache["fwd_c_cur"], c_BxF, j + 1))
    return h_BxF + take(cache["bwd_h_prev"], j), cache

  def end_row(self, cache: dict, image_BxWxC: jax.Array | None = None) -> dict:
    """Runs the backward direction over the finished row (right to left).

    Args:
      cache: the caches after `at` has run at every column of the row.
      image_BxWxC: the finished image row, in [-1, 1], exactly when
        ``image_features > 0``.

    Returns:
      The caches for the next row.
    """
    if (image_BxWxC is None) != (self.image_features == 0):
      raise ValueError(f"this layer reads an image of {self.image_features} channels; "
                       "pass image_BxWxC exactly when image_features > 0")
    inputs = cache["inputs"] if image_BxWxC is None else jnp.concatenate(
        [cache["inputs"], image_BxWxC.astype(jnp.float32)], axis=-1)
    kernel = self._state_kernel(1)  # backward direction: [2 taps, F, 4F]

    def step(carry, xs):  # column j from column j + 1 (its left in the mirror)
      h_right, c_right = carry
      pre_Bx4F, up_BxF = xs
      h, c = lstm_update(pre_Bx4F + up_BxF @ kernel[0] + h_right @ kernel[1], c_right)
      return (h, c), h

    right_to_left = lambda a: jnp.moveaxis(a, 1, 0)[::-1]  # noqa: E731
    zeros = _zero_states(cache["bwd_h_prev"][:, 0].shape, cache["bwd_h_prev"].dtype)
    _, h_WxBxF = jax.lax.scan(step, zeros, (right_to_left(self.backward_input(inputs)),
                                                   right_to_left(cache["bwd_h_prev"])))
    return dict(cache, fwd_h_prev=cache["fwd_h_cur"][:, 1:],
                bwd_h_prev=jnp.moveaxis(h_WxBxF[::-1], 0, 1))
