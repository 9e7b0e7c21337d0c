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

Sampling: ``method="naive"`` only, a ``lax.scan`` over sub-pixels that reruns the
whole network at each one (`genjax.models.autoregressive.sample_naive`).
"""

from __future__ import annotations

import jax
from flax import nnx

from genjax.models import autoregressive as ar
from genjax.nn import masked
from genjax.nn import recurrent

LIKELIHOOD = "exact"
CELLS = ("row_lstm", "diagonal_bilstm")
_DEFAULTS = dict(name="pixelrnn", input_shape=None, likelihood="bernoulli",
                 cell="diagonal_bilstm", features=16, num_layers=2, first_kernel_size=7,
                 kernel_size=3, output_features=32)
_CHOICES = {"likelihood": ar.LIKELIHOODS, "cell": CELLS}


class _Layer(nnx.Module):
  """A residual LSTM layer ``h + 1x1_B(lstm(h))`` (figure 5 of the paper)."""

  def __init__(self, cell, features, kernel_size, num_groups, reads_image, *, rngs):
    self.reads_image = reads_image and cell == "diagonal_bilstm"
    if cell == "row_lstm":
      self.lstm = recurrent.RowLSTM(features, features, kernel_size, num_groups, rngs=rngs)
    else:
      self.lstm = recurrent.DiagonalBiLSTM(
          features, features, num_groups, image_features=num_groups if reads_image else 0,
          rngs=rngs)
    self.proj = masked.causal(features, features, 1, "B", num_groups=num_groups, rngs=rngs)

  def __call__(self, h_BxHxWxF, x_BxHxWxC):
    lstm = self.lstm(h_BxHxWxF, x_BxHxWxC) if self.reads_image else self.lstm(h_BxHxWxF)
    return h_BxHxWxF + self.proj(lstm)


class PixelRNN(nnx.Module):
  """The PixelRNN network; see `build` for the fields."""

  def __init__(self, input_shape, likelihood, cell, features, num_layers, first_kernel_size,
               kernel_size, output_features, *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.likelihood = likelihood
    self.cell = cell
    c = self.input_shape[-1]
    self.input_conv = masked.causal(c, features, first_kernel_size, "A", num_groups=c,
                                    rngs=rngs)
    self.layers = nnx.List([_Layer(cell, features, kernel_size, c, l == 0, rngs=rngs)
                            for l in range(num_layers)])
    self.out1 = masked.causal(features, output_features, 1, "B", num_groups=c, rngs=rngs)
    self.out2 = masked.causal(output_features, c * ar.num_outputs(likelihood), 1, "B",
                              num_groups=c, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
    """Logits ``[B, H, W, C]`` or ``[B, H, W, C, 256]`` for inputs in [-1, 1]."""
    if labels is not None:
      raise ValueError("PixelRNN is unconditional: do not pass labels "
                       "(gated_pixelcnn with num_classes > 0 takes them)")
    h = self.input_conv(x_BxHxWxC)
    for layer in self.layers:
      h = layer(h, x_BxHxWxC)
    out = self.out2(jax.nn.relu(self.out1(jax.nn.relu(h))))
    return ar.split_channels(out, self.input_shape, self.likelihood)


def build(config, key: jax.Array) -> PixelRNN:
  """Builds a PixelRNN from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` (or dict) with ``input_shape=(H, W, C)`` and optionally
      ``likelihood`` (``"bernoulli"`` for 0/1 images, ``"categorical"`` for 0..255),
      ``cell`` (``"row_lstm"`` or ``"diagonal_bilstm"``), ``features`` (LSTM units
      and residual width, at least C), ``num_layers`` (LSTM layers),
      ``first_kernel_size`` (the mask-A layer, odd), ``kernel_size`` (odd k of the
      Row LSTM's ``1 x k`` state-to-state convolution; the Diagonal BiLSTM's
      kernels are fixed, 1x1 input-to-state and 2x1 state-to-state) and
      ``output_features``.
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


def sample(model: PixelRNN, key: jax.Array, num: int, method: str = "naive",
           temperature: float = 1.0) -> jax.Array:
  """Draws ``num`` images one sub-pixel at a time, rerunning the network each time.

  Args:
    model: a `PixelRNN`.
    key: PRNG key; sub-pixel ``t`` uses ``fold_in(key, t)`` (as the pixel CNNs).
    num: number of images (static).
    method: ``"naive"``, the only one: a ``lax.scan`` over the ``H * W * C``
      sub-pixels, each running the whole network (O(image) work per sub-pixel).
    temperature: divides the logits (< 1 sharpens).

  Returns:
    ``uint8[num, H, W, C]`` in data space.

  Raises:
    ValueError: for ``method="cached"`` or any other method than ``"naive"``.

  References:
    van den Oord et al., "Pixel Recurrent Neural Networks", ICML 2016.
  """
  if method != "naive":
    raise ValueError(
        f"pixelrnn samples with method='naive' only, got method={method!r}: the "
        "cached sampler of the pixel CNNs (per-layer caches of earlier rows) has no "
        "PixelRNN version here; pass method='naive'")
  model = masked.premask(model)  # the masks are applied once, not at every step
  return ar.sample(lambda x: ar.conditionals(model, x), None, key, num, model.input_shape,
                   model.likelihood, method, temperature)
