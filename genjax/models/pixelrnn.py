"""PixelRNN (van den Oord et al. 2016): two-dimensional LSTMs, exact likelihood.

``p(x) = prod_i p(x_i | x_<i)`` over the sub-pixels in raster order (rows, then
columns, then the channels R, G, B), as in `genjax.models.pixelcnn`, but the
hidden layers are LSTMs that run over the image (`genjax.nn.recurrent`):

* ``cell="row_lstm"``: a `RowLSTM` per layer, a scan over rows with a ``1 x k``
  state-to-state convolution; its receptive field is a triangle above each pixel:
  ``d`` rows up it reaches at most ``(d - 1) * (k // 2) + first_kernel_size // 2``
  columns right (for ``first_kernel_size >= k``; tested), whatever the depth.
* ``cell="diagonal_bilstm"``: a `DiagonalBiLSTM` per layer, two scans over the
  diagonals (the second on the mirrored image, shifted down one row); every layer
  sees every earlier pixel (no blind spot). The paper's best model. One addition
  to the paper: the first layer's backward direction also reads the image itself
  (allowed, as its output is shifted down one row); without it the first pixels of
  a row would never see the last pixel of the row above (tested).

The network is a 7x7 mask-A convolution, ``num_layers`` residual layers
``h + 1x1_B(lstm(h))`` and two masked 1x1 output layers with ReLUs. Every
input-to-state map is masked by colour group, so channel ``c`` of a pixel sees
only channels ``< c`` of that pixel; the state-to-state maps only read earlier
pixels (tested by gradient for both cells, grey and colour).

Likelihoods: ``"bernoulli"`` (one logit per sub-pixel) for binarized images and
``"categorical"`` (a 256-way softmax per sub-pixel) for 8-bit images.

``dtype="bfloat16"``: the convolutions, the LSTMs' gates and hidden states compute in
bfloat16; parameters, the LSTMs' cell states, the logits' softmax and the likelihood
stay float32.

Sampling: ``method="cached"`` (the default) evaluates one position per step from
per-layer caches (`genjax.models.autoregressive.sample_cached`): the mask-A
layer's input rows, each LSTM's hidden and cell states of the row above and of
the current row, and, for the Diagonal BiLSTM, its backward direction, run once
over each finished row. ``method="naive"`` reruns the whole network at each
sub-pixel. For the same key both give the same images (tested).
"""

from __future__ import annotations

import jax
from flax import nnx

from genjax import compiled
from genjax import nn
from genjax.models import autoregressive as ar
from genjax.nn import masked
from genjax.nn import recurrent

LIKELIHOOD = "exact"
CELLS = ("row_lstm", "diagonal_bilstm")
_DEFAULTS = dict(name="pixelrnn", input_shape=None, likelihood="bernoulli",
                 cell="diagonal_bilstm", features=16, num_layers=2, first_kernel_size=7,
                 kernel_size=3, output_features=32, dtype="float32")
_CHOICES = {"likelihood": ar.LIKELIHOODS, "cell": CELLS, "dtype": tuple(nn.DTYPES)}


class _Layer(nnx.Module):
  """A residual LSTM layer ``h + 1x1_B(lstm(h))`` (figure 5 of the paper; see `_network`)."""

  def __init__(self, cell, features, kernel_size, num_groups, reads_image, *, dtype, rngs):
    self.reads_image = reads_image and cell == "diagonal_bilstm"
    if cell == "row_lstm":
      self.lstm = recurrent.RowLSTM(features, features, kernel_size, num_groups, dtype=dtype,
                                    rngs=rngs)
    else:
      self.lstm = recurrent.DiagonalBiLSTM(
          features, features, num_groups, image_features=num_groups if reads_image else 0,
          dtype=dtype, rngs=rngs)
    self.proj = masked.causal(features, features, 1, "B", num_groups=num_groups, dtype=dtype,
                              rngs=rngs)


class PixelRNN(nnx.Module):
  """The PixelRNN network; see `build` for the fields."""

  def __init__(self, input_shape, likelihood, cell, features, num_layers, first_kernel_size,
               kernel_size, output_features, dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.likelihood = likelihood
    self.cell = cell
    self.dtype = nn.compute_dtype(dtype)  # of the layers; None: float32
    c = self.input_shape[-1]
    kw = dict(num_groups=c, dtype=self.dtype, rngs=rngs)
    self.input_conv = masked.causal(c, features, first_kernel_size, "A", **kw)
    self.layers = nnx.List([_Layer(cell, features, kernel_size, c, l == 0, dtype=self.dtype,
                                   rngs=rngs) for l in range(num_layers)])
    self.out1 = masked.causal(features, output_features, 1, "B", **kw)
    self.out2 = masked.causal(output_features, c * ar.num_outputs(likelihood), 1, "B", **kw)

  def __call__(self, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
    """Logits ``[B, H, W, C]`` or ``[B, H, W, C, 256]`` for inputs in [-1, 1]."""
    if labels is not None:
      raise ValueError("PixelRNN is unconditional: do not pass labels "
                       "(gated_pixelcnn with num_classes > 0 takes them)")
    return _network(self, x_BxHxWxC, self.input_conv,
                    lambda _, layer, h: layer.lstm(h, x_BxHxWxC) if layer.reads_image
                    else layer.lstm(h))


def _network(model: PixelRNN, x_in, input_conv, lstm):
  """The network on inputs in [-1, 1]: ``[B, H, W, C]`` or one position ``[B, C]``.

  ``input_conv(x)`` applies the mask-A layer and ``lstm(index, layer, h)`` a layer's LSTM:
  on the whole map, or at one position through their caches. The rest is pointwise.
  """
  h = input_conv(x_in)
  for index, layer in enumerate(model.layers):
    h = h + layer.proj(lstm(index, layer, h))
  out = model.out2(jax.nn.relu(model.out1(jax.nn.relu(h))))
  return ar.split_channels(out, model.input_shape, model.likelihood)


def build(config, key: jax.Array) -> PixelRNN:
  """Builds a PixelRNN from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` (or dict) with ``input_shape=(H, W, C)`` and optionally
      ``likelihood`` (``"bernoulli"`` for 0/1 images, ``"categorical"`` for 0..255),
      ``cell`` (``"row_lstm"`` or ``"diagonal_bilstm"``), ``features`` (LSTM units
      and residual width, at least C), ``num_layers`` (LSTM layers),
      ``first_kernel_size`` (the mask-A layer, odd), ``kernel_size`` (odd k of the
      Row LSTM's ``1 x k`` state-to-state convolution; the Diagonal BiLSTM's
      kernels are fixed, 1x1 input-to-state and 2x1 state-to-state),
      ``output_features`` and ``dtype`` (``"float32"`` or ``"bfloat16"``: the layers'
      computation; parameters, cell states, the softmax of the logits and the
      likelihood stay float32).
    key: PRNG key of the initialisation.

  Returns:
    The `PixelRNN` module.

  Raises:
    ValueError: naming the field, for an unknown field or a bad value.

  References:
    van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
    ICML 2016 (sections 3.1-3.4, figure 5 and table 1).
  """
  cfg = ar.parse_config(config, _DEFAULTS, _CHOICES)
  del cfg["name"]
  return PixelRNN(**cfg, rngs=nnx.Rngs(params=key))


check_config = ar.check_config
conditionals = ar.conditionals
log_likelihood = ar.log_likelihood
loss = ar.loss


def cached_net(model: PixelRNN, num: int) -> ar.CachedNet:
  """The `autoregressive.CachedNet` of ``model``: caches of the mask-A layer and LSTMs.

  Every hidden unit at ``(i, j)`` reads only the channels of ``(i, j)`` before its
  own colour group, so the states written at a pixel's last channel are final;
  ``commit`` then only writes the finished pixel to the mask-A layer's cache.
  """
  height, width = model.input_shape[:2]
  to_input = lambda x: ar.to_input(x, model.likelihood)  # noqa: E731

  def init():
    return (model.input_conv.init_cache(num, height, width),
            [layer.lstm.init_cache(num, height, width) for layer in model.layers])

  def pixel(cache, i, j, x_BxC):
    input_cache, lstm_caches = cache[0], list(cache[1])

    def input_conv(x_BxC_in):
      y, _ = model.input_conv.at(input_cache, i, j, x_BxC_in)
      return y

    def lstm(index, layer, h_BxF):
      y, lstm_caches[index] = layer.lstm.at(lstm_caches[index], i, j, h_BxF)
      return y

    return _network(model, to_input(x_BxC), input_conv, lstm), (input_cache, lstm_caches)

  def commit(cache, i, j, x_BxC):
    return (model.input_conv.write(cache[0], i, j, to_input(x_BxC)), cache[1])

  def end_row(cache, i, x_BxWxC):
    del i
    return (cache[0], [layer.lstm.end_row(c, to_input(x_BxWxC) if layer.reads_image else None)
                       for layer, c in zip(model.layers, cache[1])])

  return ar.CachedNet(init, pixel, commit, end_row)


@compiled.model_function(static_argnames=ar.SAMPLE_STATICS, check=ar.check_sample_args)
def sample(model: PixelRNN, key: jax.Array, num: int, method: str = "cached",
           temperature: float = 1.0) -> jax.Array:
  """Draws ``num`` images one sub-pixel at a time.

  Args:
    model: a `PixelRNN`.
    key: PRNG key; sub-pixel ``t`` uses ``fold_in(key, t)`` whatever the method.
    num: number of images (static).
    method: ``"cached"`` (one LSTM step per layer and sub-pixel, plus one backward
      pass per row for the Diagonal BiLSTM) or ``"naive"`` (the whole network per
      sub-pixel); the same images for the same key.
    temperature: divides the logits (< 1 sharpens).

  Returns:
    ``uint8[num, H, W, C]`` in data space.

  References:
    van den Oord et al., "Pixel Recurrent Neural Networks", ICML 2016.
    Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models",
    ICLR 2017 workshop (``method="cached"``).
  """
  model = masked.premask(model)  # the masks are applied once, not at every step
  return ar.sample(lambda x: ar.conditionals(model, x), cached_net(model, num), key, num,
                   model.input_shape, model.likelihood, method, temperature)
