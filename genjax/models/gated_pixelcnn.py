"""Gated PixelCNN (van den Oord et al. 2016): two stacks without a blind spot.

Each layer has a vertical stack, a ``(k // 2 + 1) x k`` unmasked convolution over
the rows up to the current one, and a horizontal stack, a ``1 x (k // 2 + 1)``
masked convolution over the current row up to the current pixel (mask A in the
first layer, mask B after, channel groups R, G, B). The vertical features,
shifted down one row so that they only hold rows above, feed the horizontal
stack through a 1x1 layer; together the two cover every earlier pixel. Both
stacks use gated units ``tanh(a) * sigmoid(b)``; the horizontal stack is
residual. With ``num_classes > 0`` the model is class-conditional: a learned
embedding of ``batch["label"]`` is added to the gates of both stacks of every
layer (``h`` in eq. 4 of the paper). ``dtype="bfloat16"``: every layer (and the
label embedding) computes in bfloat16; parameters, sampling caches, the logits'
softmax and the likelihood stay float32.

Sampling (`genjax.models.autoregressive`): ``method="cached"`` evaluates the
horizontal stack one position at a time from per-layer one-row caches, and the
vertical stack once per completed row from per-layer ring caches of its last
rows (O(layers * kernel) per sub-pixel on average); ``method="naive"`` reruns
the whole network. The same images for the same key.
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
_DEFAULTS = dict(name="gated_pixelcnn", input_shape=None, likelihood="bernoulli",
                 features=32, num_layers=5, first_kernel_size=7, kernel_size=3,
                 output_features=32, num_classes=0, dtype="float32")
_CHOICES = {"likelihood": ar.LIKELIHOODS, "dtype": tuple(nn.DTYPES)}


def _gate(a_Bx2F: jax.Array) -> jax.Array:
  f = a_Bx2F.shape[-1] // 2
  return jnp.tanh(a_Bx2F[..., :f]) * jax.nn.sigmoid(a_Bx2F[..., f:])


class _GatedLayer(nnx.Module):
  """One layer of both stacks (figure 2 of the paper)."""

  def __init__(self, in_features, features, kernel_size, mask_type, num_groups, num_classes,
               *, dtype, rngs):
    p = kernel_size // 2
    two_f = 2 * features
    self.v_conv = masked.MaskedConv(in_features, two_f, (p + 1, kernel_size), (p, p), None,
                                    dtype=dtype, rngs=rngs)
    self.h_conv = masked.MaskedConv(in_features, two_f, (1, p + 1), (0, p), mask_type,
                                    num_groups=num_groups, out_tiles=2, dtype=dtype,
                                    rngs=rngs)
    self.v_to_h = masked.MaskedConv(two_f, two_f, (1, 1), (0, 0), None, dtype=dtype,
                                    rngs=rngs)
    self.h_out = masked.causal(features, features, 1, "B", num_groups=num_groups,
                               dtype=dtype, rngs=rngs)
    self.residual = mask_type == "B"
    self.embed = (nnx.Embed(num_classes, two_f, dtype=dtype, rngs=rngs) if num_classes
                  else None)

  def cond(self, labels_B):  # [B, 2F] or 0
    return 0.0 if self.embed is None else self.embed(labels_B)

  def horizontal(self, h_pre, h, cond):
    out = self.h_out(_gate(h_pre + cond))
    return h + out if self.residual else out


class GatedPixelCNN(nnx.Module):
  """The Gated PixelCNN network; see `build` for the fields."""

  def __init__(self, input_shape, likelihood, features, num_layers, first_kernel_size,
               kernel_size, output_features, num_classes, dtype="float32", *,
               rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.likelihood = likelihood
    self.num_classes = num_classes
    self.dtype = nn.compute_dtype(dtype)  # of the layers; None: float32
    c = self.input_shape[-1]
    self.layers = nnx.List([
        _GatedLayer(c if l == 0 else features, features,
                    first_kernel_size if l == 0 else kernel_size, "A" if l == 0 else "B",
                    c, num_classes, dtype=self.dtype, rngs=rngs) for l in range(num_layers)])
    kw = dict(num_groups=c, dtype=self.dtype, rngs=rngs)
    self.out1 = masked.causal(features, output_features, 1, "B", **kw)
    self.out2 = masked.causal(output_features, c * ar.num_outputs(likelihood), 1, "B", **kw)

  def __call__(self, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
    """Logits ``[B, H, W, C]`` or ``[B, H, W, C, 256]`` for inputs in [-1, 1]."""
    return _apply(self, x_BxHxWxC, labels)


def build(config, key: jax.Array) -> GatedPixelCNN:
  """Builds a Gated PixelCNN from ``config`` (the ``model`` block of a config).

  Args:
    config: ``ConfigDict`` (or dict) with ``input_shape=(H, W, C)`` and optionally
      ``likelihood`` (``"bernoulli"`` or ``"categorical"``), ``features`` (gated
      units per layer, at least C), ``num_layers``, ``first_kernel_size`` and
      ``kernel_size`` (odd k: a ``(k//2+1) x k`` vertical and ``1 x (k//2+1)``
      horizontal kernel), ``output_features``, ``num_classes`` (0: unconditional) and
      ``dtype`` (``"float32"`` or ``"bfloat16"``: the layers' computation; parameters,
      the softmax of the logits and the likelihood stay float32).
    key: PRNG key of the initialisation.

  Returns:
    The `GatedPixelCNN` module.

  Raises:
    ValueError: naming the field, for an unknown field or a bad value.

  References:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu,
    "Conditional Image Generation with PixelCNN Decoders", NeurIPS 2016.
  """
  cfg = ar.parse_config(config, _DEFAULTS, _CHOICES)
  del cfg["name"]
  return GatedPixelCNN(**cfg, rngs=nnx.Rngs(params=key))


check_config = ar.check_config


def _labels(model: GatedPixelCNN, labels, num: int):
  if not model.num_classes:
    if labels is not None:
      raise ValueError("this Gated PixelCNN is unconditional (config.model.num_classes=0); "
                       "do not pass labels")
    return None
  if labels is None:
    raise ValueError(f"this Gated PixelCNN is class-conditional ({model.num_classes} "
                     "classes): pass labels (batch['label'], int32[B])")
  labels = jnp.asarray(labels)
  if labels.shape != (num,) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be int[{num}], got {labels.dtype}{list(labels.shape)}")
  return labels


def _output(model, h):
  out = model.out2(jax.nn.relu(model.out1(jax.nn.relu(h))))
  return ar.split_channels(out, model.input_shape, model.likelihood)


def _apply(model: GatedPixelCNN, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
  labels = _labels(model, labels, x_BxHxWxC.shape[0])
  v = h = x_BxHxWxC
  for layer in model.layers:
    cond = layer.cond(labels)
    cond = cond if labels is None else cond[:, None, None, :]
    v_pre = layer.v_conv(v)
    v_shift = jnp.pad(v_pre[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))  # rows above only
    h = layer.horizontal(layer.h_conv(h) + layer.v_to_h(v_shift), h, cond)
    v = _gate(v_pre + cond)
  return _output(model, h)


conditionals = ar.conditionals
log_likelihood = ar.log_likelihood
loss = ar.loss


def cached_net(model: GatedPixelCNN, num: int, labels=None) -> ar.CachedNet:
  """The `autoregressive.CachedNet` of ``model``.

  Caches per layer: the horizontal convolution's current row, the vertical
  convolution's last rows, and the vertical-to-horizontal term of the row being
  drawn (computed when the row above was completed)."""
  (height, width), likelihood = model.input_shape[:2], model.likelihood
  layers = list(model.layers)
  conds = [layer.cond(labels) for layer in layers]

  def init():
    return {"h": [l.h_conv.init_cache(num, height, width) for l in layers],
            "v": [l.v_conv.init_cache(num, height, width) for l in layers],
            "vh": [l.v_to_h(jnp.zeros((num, width, l.v_to_h.in_features))) for l in layers]}

  def pixel(cache, i, j, x_BxC):
    h_caches = list(cache["h"])
    h = ar.to_input(x_BxC, likelihood)
    for l, layer in enumerate(layers):
      h_pre, h_caches[l] = layer.h_conv.at(h_caches[l], i, j, h)
      h = layer.horizontal(h_pre + cache["vh"][l][:, j], h, conds[l])
    return _output(model, h), {**cache, "h": h_caches}

  def commit(cache, i, j, x_BxC):
    h0 = layers[0].h_conv.write(cache["h"][0], i, j, ar.to_input(x_BxC, likelihood))
    return {**cache, "h": [h0, *cache["h"][1:]]}

  def end_row(cache, i, x_BxWxC):  # the vertical stack on row i, for row i + 1
    v_caches, vh = list(cache["v"]), []
    v = ar.to_input(x_BxWxC, likelihood)
    for l, layer in enumerate(layers):
      v_pre, v_caches[l] = layer.v_conv.row_at(v_caches[l], i, v)
      vh.append(layer.v_to_h(v_pre))
      cond = conds[l] if labels is None else conds[l][:, None]
      v = _gate(v_pre + cond)
    return {**cache, "v": v_caches, "vh": vh}

  return ar.CachedNet(init, pixel, commit, end_row)


@compiled.model_function(static_argnames=ar.SAMPLE_STATICS, check=ar.check_sample_args)
def sample(model: GatedPixelCNN, key: jax.Array, num: int, method: str = "cached",
           temperature: float = 1.0, labels=None) -> jax.Array:
  """Draws ``num`` images one sub-pixel at a time.

  Args:
    model: a `GatedPixelCNN`.
    key: PRNG key; sub-pixel ``t`` uses ``fold_in(key, t)`` whatever the method.
    num: number of images (static).
    method: ``"cached"`` or ``"naive"``; the same images for the same key.
    temperature: divides the logits (< 1 sharpens).
    labels: ``int[num]`` classes of a class-conditional model; default
      ``arange(num) % num_classes`` (rows of a grid cycle through the classes).

  Returns:
    ``uint8[num, H, W, C]`` in data space.

  References:
    van den Oord et al., "Conditional Image Generation with PixelCNN Decoders",
    NeurIPS 2016. Ramachandran et al., "Fast Generation for Convolutional
    Autoregressive Models", ICLR 2017 workshop (``method="cached"``).
  """
  if model.num_classes and labels is None:
    labels = jnp.arange(num) % model.num_classes
  labels = _labels(model, labels, num)
  model = masked.premask(model)  # the masks are applied once, not at every step
  return ar.sample(lambda x: ar.conditionals(model, x, labels), cached_net(model, num, labels),
                   key, num, model.input_shape, model.likelihood, method, temperature)
