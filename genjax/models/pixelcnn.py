"""PixelCNN (van den Oord et al. 2016): masked convolutions, exact likelihood.

``p(x) = prod_i p(x_i | x_<i)`` over the sub-pixels in raster order (rows, then
columns, then the channels R, G, B). The network is a 7x7 mask-A convolution,
``num_layers`` residual blocks ``h + 1x1(relu(kxk_B(relu(h))))`` and two masked
1x1 output layers; every layer is a `genjax.nn.masked.MaskedConv`, so the output
at a position only sees earlier sub-pixels (a k x k mask B stack has the "blind
spot" above-right of each pixel; `genjax.models.gated_pixelcnn` has none).

Likelihoods: ``"bernoulli"`` (one logit per sub-pixel) for binarized images and
``"categorical"`` (a 256-way softmax per sub-pixel) for 8-bit images.

``dtype="bfloat16"``: every layer computes in bfloat16 (parameters, sampling caches,
the logits' softmax and the likelihood stay float32).

Sampling: ``method="cached"`` keeps a ring buffer of each spatial layer's last
input rows and evaluates one position per step (Ramachandran et al. 2017);
``method="naive"`` reruns the whole network at each sub-pixel. For the same key
both give the same images (`genjax.models.autoregressive`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genjax import compiled
from genjax import nn
from genjax.models import autoregressive as ar
from genjax.nn import masked

LIKELIHOOD = "exact"
_DEFAULTS = dict(name="pixelcnn", input_shape=None, likelihood="bernoulli", features=32,
                 num_layers=5, first_kernel_size=7, kernel_size=3, output_features=32,
                 dtype="float32")
_CHOICES = {"likelihood": ar.LIKELIHOODS, "dtype": tuple(nn.DTYPES)}


class _Block(nnx.Module):
  """A residual block ``h + 1x1_B(relu(kxk_B(relu(h))))``."""

  def __init__(self, features, kernel_size, num_groups, *, dtype, rngs):
    kw = dict(num_groups=num_groups, dtype=dtype, rngs=rngs)
    self.conv = masked.causal(features, features, kernel_size, "B", **kw)
    self.proj = masked.causal(features, features, 1, "B", **kw)


class PixelCNN(nnx.Module):
  """The PixelCNN network; see `build` for the fields."""

  def __init__(self, input_shape, likelihood, features, num_layers, first_kernel_size,
               kernel_size, output_features, dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.likelihood = likelihood
    self.dtype = nn.compute_dtype(dtype)  # of the layers; None: float32
    c = self.input_shape[-1]
    kw = dict(num_groups=c, dtype=self.dtype, rngs=rngs)
    self.input_conv = masked.causal(c, features, first_kernel_size, "A", **kw)
    self.blocks = nnx.List([_Block(features, kernel_size, c, dtype=self.dtype, rngs=rngs)
                            for _ in range(num_layers)])
    self.out1 = masked.causal(features, output_features, 1, "B", **kw)
    self.out2 = masked.causal(output_features, c * ar.num_outputs(likelihood), 1, "B", **kw)

  def __call__(self, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
    """Logits ``[B, H, W, C]`` or ``[B, H, W, C, 256]`` for inputs in [-1, 1]."""
    if labels is not None:
      raise ValueError("PixelCNN is unconditional: do not pass labels "
                       "(gated_pixelcnn with num_classes > 0 takes them)")
    return _network(self, x_BxHxWxC, lambda _, layer, h: layer(h))


def build(config, key: jax.Array) -> PixelCNN:
  """Builds a PixelCNN from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` (or dict) with ``input_shape=(H, W, C)`` and optionally
      ``likelihood`` (``"bernoulli"`` for 0/1 images, ``"categorical"`` for 0..255),
      ``features`` (width of every hidden layer, at least C), ``num_layers``
      (residual blocks), ``first_kernel_size`` (the mask-A layer, odd),
      ``kernel_size`` (the mask-B layers, odd), ``output_features`` and ``dtype``
      (``"float32"`` or ``"bfloat16"``: the layers' computation; parameters, the
      softmax of the logits and the likelihood stay float32).
    key: PRNG key of the initialisation.

  Returns:
    The `PixelCNN` module.

  Raises:
    ValueError: naming the field, for an unknown field or a bad value.

  References:
    van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
    ICML 2016 (section 3.5 and table 1, the PixelCNN).
  """
  cfg = ar.parse_config(config, _DEFAULTS, _CHOICES)
  del cfg["name"]
  return PixelCNN(**cfg, rngs=nnx.Rngs(params=key))


check_config = ar.check_config


def _network(model: PixelCNN, x_in, spatial):
  """The network on inputs in [-1, 1]: ``[B, H, W, C]`` or one position ``[B, C]``.

  ``spatial(index, layer, h)`` applies the index-th spatial (k x k) layer: on the
  whole map, or at one position through its cache. Everything else is pointwise.
  """
  h = spatial(0, model.input_conv, x_in)
  for l, block in enumerate(model.blocks):
    h = h + block.proj(jax.nn.relu(spatial(l + 1, block.conv, jax.nn.relu(h))))
  out = model.out2(jax.nn.relu(model.out1(jax.nn.relu(h))))
  return ar.split_channels(out, model.input_shape, model.likelihood)


conditionals = ar.conditionals
log_likelihood = ar.log_likelihood
loss = ar.loss


def cached_net(model: PixelCNN, num: int) -> ar.CachedNet:
  """The `autoregressive.CachedNet` of ``model``: one ring cache per spatial layer."""
  spatial_layers = [model.input_conv] + [b.conv for b in model.blocks]
  height, width = model.input_shape[:2]

  def init():
    return [layer.init_cache(num, height, width) for layer in spatial_layers]

  def pixel(cache, i, j, x_BxC):
    cache = list(cache)

    def spatial(index, layer, h_BxF):
      y, cache[index] = layer.at(cache[index], i, j, h_BxF)
      return y

    return _network(model, ar.to_input(x_BxC, model.likelihood), spatial), cache

  def commit(cache, i, j, x_BxC):
    return [model.input_conv.write(cache[0], i, j, ar.to_input(x_BxC, model.likelihood)),
            *cache[1:]]

  return ar.CachedNet(init, pixel, commit)


@compiled.model_function(static_argnames=ar.SAMPLE_STATICS, check=ar.check_sample_args)
def sample(model: PixelCNN, key: jax.Array, num: int, method: str = "cached",
           temperature: float = 1.0) -> jax.Array:
  """Draws ``num`` images one sub-pixel at a time.

  Args:
    model: a `PixelCNN`.
    key: PRNG key; sub-pixel ``t`` uses ``fold_in(key, t)`` whatever the method.
    num: number of images (static).
    method: ``"cached"`` (O(layers * kernel) per sub-pixel) or ``"naive"`` (the
      whole network per sub-pixel); the same images for the same key.
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
