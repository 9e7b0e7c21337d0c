"""PixelCNN++ (Salimans et al. 2017): a discretized logistic mixture, two shifted streams.

``p(x) = prod_(i, j) p(x_ij | x_<ij)`` over pixels in raster order. Each pixel is
a mixture of ``K = num_mixtures`` components shared by its channels:

  p(x_ij | x_<ij) = sum_k pi_k prod_c DLogistic(x_ijc; mu_ck + sum_(c' < c) a_cc'k x_ijc',
                                                s_ck)

with ``DLogistic`` the discretized logistic over ``0..255`` of
`genjax.distributions.discretized_logistic_log_prob` (edge bins to +-inf) and the
channel coupling of the paper (G's mean shifted by ``a * R``, B's by R and G,
``a = tanh(.)``; values in [-1, 1] units). Grey images have no coupling. The
mixture lives in `genjax.models.logistic_mixture`; its names are re-exported here.

The network (section 2.4 and figure 2 of the paper) has two streams of ordinary
convolutions, shifted so that nothing sees the current or a later pixel
(`genjax.nn.shifted`): ``u`` (down-shifted, the rows above) and ``ul``
(down-right-shifted, above and to the left, fed ``u`` by 1x1 links); together
they have no blind spot. Layers are gated resnet blocks ``x + a * sigmoid(b)``,
``(a, b) = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(aux)))))``.
A downsampling pass (``num_scales`` scales, ``num_resnet`` blocks each, strided
shifted convolutions between scales) stores every output; an upsampling pass
(transposed shifted convolutions) reads them back as ``aux`` shortcuts.
Dropout (rate ``dropout``) acts only in `loss`, with the key of the train step.
Not included: weight normalisation and its data-dependent initialisation (the
last convolution of each block starts scaled by 0.1 instead) and Polyak averaging.

Sampling draws all channels of pixel ``t = i * W + j`` jointly with
``jax.random.fold_in(key, t)``, either ``method="cached"`` (the default: each
layer advances from caches of its inputs, each scale at its own rate, after
Ramachandran et al. 2017) or ``method="naive"`` (a ``lax.scan`` over the pixels
that reruns the network at each one); both give the same images for the same
key. PixelCNN++ models 8-bit data only.

``dtype="bfloat16"``: the network computes in bfloat16; parameters, sampling caches,
the mixture parameters (promoted to float32), the channel coupling, the
discretized logistic mixture likelihood and its logsumexp stay float32.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from genjax import compiled
from genjax.models import autoregressive as ar
from genjax.models import check_image_batch
from genjax.models.logistic_mixture import (  # re-exported: the likelihood of this family
    Mixture, coupled_means, draw_pixel, num_params, pixel_log_prob, split_params)
from genjax.nn import layers
from genjax.nn import shifted

LIKELIHOOD = "exact"
_DEFAULTS = dict(name="pixelcnn_pp", input_shape=None, features=32, num_resnet=2,
                 num_scales=3, num_mixtures=10, dropout=0.0, dtype="float32")


def concat_elu(x: jax.Array) -> jax.Array:
  """``elu([x, -x])``: the paper's non-linearity, doubling the features."""
  return jax.nn.elu(jnp.concatenate([x, -x], axis=-1))


_KERNELS = {"down": (2, 3), "down_right": (2, 2)}


class _GatedResnet(nnx.Module):
  """``x + a * sigmoid(b)`` with an optional auxiliary input (``gated_resnet``)."""

  def __init__(self, features, kind, aux_features, *, dtype, rngs):
    kernel = _KERNELS[kind]
    self.conv1 = shifted.ShiftedConv(2 * features, features, kind, kernel, dtype=dtype,
                                     rngs=rngs)
    self.aux = (layers.linear(2 * aux_features, features, dtype=dtype, rngs=rngs)
                if aux_features else None)
    self.conv2 = shifted.ShiftedConv(2 * features, 2 * features, kind, kernel,
                                     init_scale=0.1, dtype=dtype, rngs=rngs)

  def __call__(self, x, aux, key, rate):
    c = self.conv1(concat_elu(x))
    if self.aux is not None:
      c = c + self.aux(concat_elu(aux))
    a, b = jnp.split(self.conv2(layers.dropout(key, rate, concat_elu(c))), 2, axis=-1)
    return x + a * jax.nn.sigmoid(b)


def _blocks(n, features, kind, aux_features, dtype, rngs):
  return nnx.List([_GatedResnet(features, kind, aux_features, dtype=dtype, rngs=rngs)
                   for _ in range(n)])


class PixelCNNPP(nnx.Module):
  """The PixelCNN++ network; see `build` for the fields."""

  def __init__(self, input_shape, features, num_resnet, num_scales, num_mixtures, dropout,
               dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    self.num_mixtures, self.dropout = num_mixtures, float(dropout)
    self.dtype = dt = layers.compute_dtype(dtype)  # of the network; None: float32
    c, f = self.input_shape[-1], features
    conv = functools.partial(shifted.ShiftedConv, dtype=dt, rngs=rngs)
    convt = functools.partial(shifted.ShiftedConvTranspose, dtype=dt, rngs=rngs)
    # Inputs get a channel of ones, so that the network can tell image from padding.
    self.u_in = conv(c + 1, f, "down", (2, 3))
    self.ul_in_above = conv(c + 1, f, "down", (1, 3))
    self.ul_in_left = conv(c + 1, f, "down_right", (2, 1))
    # Downsampling pass: scale s has num_resnet blocks; a strided conv between scales.
    self.down_u = nnx.List([_blocks(num_resnet, f, "down", 0, dt, rngs)
                            for _ in range(num_scales)])
    self.down_ul = nnx.List([_blocks(num_resnet, f, "down_right", f, dt, rngs)
                             for _ in range(num_scales)])
    self.down_u_stride = nnx.List([conv(f, f, "down", (2, 3), stride=2)
                                   for _ in range(num_scales - 1)])
    self.down_ul_stride = nnx.List([conv(f, f, "down_right", (2, 2), stride=2)
                                    for _ in range(num_scales - 1)])
    # Upsampling pass, coarsest scale first: every block reads one stored output.
    sizes = [num_resnet] + [num_resnet + 1] * (num_scales - 1)
    self.up_u = nnx.List([_blocks(n, f, "down", f, dt, rngs) for n in sizes])
    self.up_ul = nnx.List([_blocks(n, f, "down_right", 2 * f, dt, rngs) for n in sizes])
    self.up_u_stride = nnx.List([convt(f, f, "down", (2, 3)) for _ in range(num_scales - 1)])
    self.up_ul_stride = nnx.List([convt(f, f, "down_right", (2, 2))
                                  for _ in range(num_scales - 1)])
    self.out = layers.linear(f, num_params(c, num_mixtures), dtype=dt, rngs=rngs)

  def __call__(self, x_BxHxWxC: jax.Array, key: jax.Array | None = None) -> Mixture:
    """The (uncoupled) mixture parameters at every pixel, for inputs in [-1, 1].

    Args:
      x_BxHxWxC: images in [-1, 1].
      key: dropout randomness; None (the default) turns dropout off.
    """
    out = layers.at_least_float32(_network(self, layers.to_compute(x_BxHxWxC, self.dtype), key))
    return split_params(out, self.input_shape[-1], self.num_mixtures)


def _network(model: PixelCNNPP, x_in, key):
  """The two streams; returns ``[B, H, W, num_params]``."""
  ones = jnp.ones(x_in.shape[:-1] + (1,), x_in.dtype)
  x_pad = jnp.concatenate([x_in, ones], axis=-1)
  u = shifted.down_shift(model.u_in(x_pad))
  ul = (shifted.down_shift(model.ul_in_above(x_pad))
        + shifted.right_shift(model.ul_in_left(x_pad)))
  keys = itertools.count()  # one dropout key per block

  def block(layer, x, aux):
    k = None if key is None else jax.random.fold_in(key, next(keys))
    return layer(x, aux, k, model.dropout)

  us, uls = [u], [ul]
  num_scales = len(model.down_u)
  for s in range(num_scales):
    for u_block, ul_block in zip(model.down_u[s], model.down_ul[s]):
      u = block(u_block, u, None)
      ul = block(ul_block, ul, u)
      us.append(u)
      uls.append(ul)
    if s < num_scales - 1:
      u, ul = model.down_u_stride[s](u), model.down_ul_stride[s](ul)
      us.append(u)
      uls.append(ul)
  u, ul = us.pop(), uls.pop()
  for s in range(num_scales):
    if s > 0:
      u, ul = model.up_u_stride[s - 1](u), model.up_ul_stride[s - 1](ul)
    for u_block, ul_block in zip(model.up_u[s], model.up_ul[s]):
      u = block(u_block, u, us.pop())
      ul = block(ul_block, ul, jnp.concatenate([u, uls.pop()], axis=-1))
  assert not us and not uls
  return model.out(jax.nn.elu(ul))


def build(config, key: jax.Array) -> PixelCNNPP:
  """Builds a PixelCNN++ from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` (or dict) with ``input_shape=(H, W, C)`` (8-bit images;
      H and W divisible by ``2 ** (num_scales - 1)``) and optionally ``features``
      (width of both streams), ``num_resnet`` (gated resnet blocks per scale in the
      downsampling pass; one more in the upsampling pass), ``num_scales``,
      ``num_mixtures`` (logistic components per pixel) and ``dropout`` (rate in
      [0, 1), training only) and ``dtype`` (``"float32"`` or ``"bfloat16"``: the
      network's computation; parameters, the mixture and its likelihood stay float32).
    key: PRNG key of the initialisation.

  Returns:
    The `PixelCNNPP` module.

  Raises:
    ValueError: naming the field, for an unknown field or a bad value.

  References:
    Salimans, Karpathy, Chen & Kingma, "PixelCNN++: Improving the PixelCNN with
    discretized logistic mixture likelihood and other modifications", ICLR 2017.
  """
  cfg = _parse(config)
  del cfg["name"]
  return PixelCNNPP(**cfg, rngs=nnx.Rngs(params=key))


def _parse(config) -> dict:
  cfg = ar.parse_config(config, _DEFAULTS, {"dtype": tuple(layers.DTYPES)})
  rate = cfg["dropout"]
  if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
    raise ValueError(f"config.model.dropout must be a rate in [0, 1), got {rate!r}")
  h, w, _ = cfg["input_shape"]
  factor = 2 ** (cfg["num_scales"] - 1)
  if h % factor or w % factor:
    raise ValueError(
        f"config.model.num_scales={cfg['num_scales']} halves the image "
        f"{cfg['num_scales'] - 1} times, so H and W must be divisible by {factor}, but "
        f"input_shape is {cfg['input_shape']}; lower config.model.num_scales")
  return cfg


def check_config(config) -> None:
  """The experiment-level check: 8-bit data and a valid model block.

  Raises:
    ValueError: with the fields to change.
  """
  if config.data.view != "8bit":
    raise ValueError(
        f"pixelcnn_pp models 8-bit images with a discretized logistic mixture, but "
        f"config.data.view={config.data.view!r}; set config.data.view='8bit' (or use "
        "pixelcnn / gated_pixelcnn with likelihood='bernoulli' for binarized data)")
  if config.model.get("input_shape"):
    _parse(config.model)


def _to_input(x):
  return ar.to_input(x, "categorical")


@compiled.model_function
def conditionals(model: PixelCNNPP, x_BxHxWxC: jax.Array, key: jax.Array | None = None
                 ) -> Mixture:
  """The parameters of ``p(x_ij | x_<ij)`` at every pixel (one network pass).

  Args:
    model: a `PixelCNNPP`.
    x_BxHxWxC: uint8 images (0..255).
    key: dropout randomness (training); None for the deterministic model.

  Returns:
    A `Mixture` whose means are coupled to the earlier channels of each pixel of
    ``x``, so that ``p(x_ij | x_<ij) = sum_k softmax(logits)_k prod_c
    DLogistic(x_ijc; means[c, k], log_scales[c, k])``.
  """
  check_image_batch({"image": x_BxHxWxC}, model.input_shape)
  x_in = _to_input(x_BxHxWxC)
  mix = model(x_in, key)
  return mix._replace(means=coupled_means(mix.means, mix.coeffs, x_in))


def _log_likelihood(model, batch, key):
  check_image_batch(batch, model.input_shape)
  lp = pixel_log_prob(conditionals(model, batch["image"], key), batch["image"])
  return lp.reshape(lp.shape[0], -1).sum(-1)


@compiled.model_function
def log_likelihood(model: PixelCNNPP, batch, key: jax.Array | None = None) -> jax.Array:
  """Exact ``log p(x) = sum_ij log p(x_ij | x_<ij)`` in nats, ``float32[B]``.

  Deterministic: dropout is off whatever ``key``.

  Args:
    model: a `PixelCNNPP`.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: unused; kept for the family protocol.

  Returns:
    ``float32[B]``.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017 (section 2.1).
  """
  del key
  return _log_likelihood(model, batch, None)


@compiled.model_function
def loss(model: PixelCNNPP, batch, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Mean negative log-likelihood in nats per example, with dropout drawn from ``key``.

  Args:
    model: a `PixelCNNPP`.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: dropout randomness (None: no dropout).

  Returns:
    ``(loss, metrics)`` with metrics ``loss``, ``nll_nats`` and ``bits_per_dim``.
  """
  nll = -jnp.mean(_log_likelihood(model, batch, key))
  dims = math.prod(model.input_shape)
  return nll, {"loss": nll, "nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2.0))}


# ------------------------------------------------------------------ cached sampling
# Ramachandran et al. 2017 for PixelCNN++: every layer keeps a cache of its
# (padded) input at its own scale (`shifted.ShiftedConv.init_cache`). The ``u``
# stream at row i reads only image rows < i, so it advances a whole row at a time
# (`_u_rows`, at the start of each row); the ``ul`` stream advances one pixel at a
# time (`_ul_pixel`). A coarser scale s advances on the rows and pixels whose
# indices are multiples of 2 ** s, where the strided and transposed convolutions
# find every input they read already cached. Images are walked in blocks of
# 2 ** (num_scales - 1) rows and columns, so that which scales advance at each
# position is static and needs no `lax.cond`.


def _block_step(block: _GatedResnet, caches, x, aux, write, read):
  """One gated resnet block at one row or pixel through its two conv caches."""
  c1, c2 = caches
  c1 = write(block.conv1, c1, concat_elu(x))
  c = read(block.conv1, c1)
  if block.aux is not None:
    c = c + block.aux(concat_elu(aux))
  c2 = write(block.conv2, c2, concat_elu(c))
  a, b = jnp.split(read(block.conv2, c2), 2, axis=-1)
  return x + a * jax.nn.sigmoid(b), (c1, c2)


def _init_caches(model: PixelCNNPP, num: int) -> dict:
  h, w = model.input_shape[:2]
  num_scales = len(model.down_u)
  size = lambda s: (num, h // 2 ** s, w // 2 ** s)  # noqa: E731
  caches = {"x_u": model.u_in.init_cache(num, h, w),
            "x_above": model.ul_in_above.init_cache(num, h, w),
            "x_left": model.ul_in_left.init_cache(num, h, w)}
  features = model.out.in_features
  for stream in ("u", "ul"):
    for s in range(num_scales):
      for b, block in enumerate(getattr(model, f"down_{stream}")[s]):
        caches[f"{stream}/down/{s}/{b}"] = (block.conv1.init_cache(*size(s)),
                                            block.conv2.init_cache(*size(s)))
        if stream == "u":
          caches[f"urow/down/{s}/{b}"] = jnp.zeros((num, w // 2 ** s, features), model.dtype)
      if s < num_scales - 1:
        caches[f"{stream}/dstride/{s}"] = getattr(
            model, f"down_{stream}_stride")[s].init_cache(*size(s))
    for level in range(num_scales):
      s = num_scales - 1 - level
      for b, block in enumerate(getattr(model, f"up_{stream}")[level]):
        caches[f"{stream}/up/{level}/{b}"] = (block.conv1.init_cache(*size(s)),
                                              block.conv2.init_cache(*size(s)))
        if stream == "u":
          caches[f"urow/up/{level}/{b}"] = jnp.zeros((num, w // 2 ** s, features), model.dtype)
      if level > 0:  # the transposed convolution's input: the coarser scale
        caches[f"{stream}/ustride/{level}"] = getattr(
            model, f"up_{stream}_stride")[level - 1].init_cache(*size(s + 1))
  return caches


def _u_rows(model: PixelCNNPP, caches: dict, i, active) -> dict:
  """Advances the ``u`` stream to row ``i`` (image rows < i are in ``caches``).

  ``active``: the scales s with ``i % 2 ** s == 0`` (static), which advance to row
  ``i // 2 ** s``. Stores each block's output row for `_ul_pixel`'s shortcuts.
  """
  caches = dict(caches)
  num_scales = len(model.down_u)
  row = lambda s: i // 2 ** s  # noqa: E731
  write = lambda s: lambda layer, cache, v: layer.write_row(cache, row(s), v)  # noqa: E731
  read = lambda s: lambda layer, cache: layer.row_at(cache, row(s))  # noqa: E731
  # u = down_shift(u_in(x)): row i is u_in's row i - 1 (zeros on row 0)
  u = jnp.where(i > 0, model.u_in.row_at(caches["x_u"], i - 1), 0.0)
  us = [u]
  for s in active:
    for b, block in enumerate(model.down_u[s]):
      name = f"u/down/{s}/{b}"
      u, caches[name] = _block_step(block, caches[name], u, None, write(s), read(s))
      caches[f"urow/down/{s}/{b}"] = u
      us.append(u)
    if s < num_scales - 1:
      name, layer = f"u/dstride/{s}", model.down_u_stride[s]
      caches[name] = layer.write_row(caches[name], row(s), u)
      if s + 1 in active:
        u = layer.row_at(caches[name], row(s + 1))
        us.append(u)
  for level in range(num_scales):
    s = num_scales - 1 - level
    if s not in active:
      continue
    u = us.pop() if level == 0 else model.up_u_stride[level - 1].row_at(
        caches[f"u/ustride/{level}"], row(s))
    for b, block in enumerate(model.up_u[level]):
      name = f"u/up/{level}/{b}"
      u, caches[name] = _block_step(block, caches[name], u, us.pop(), write(s), read(s))
      caches[f"urow/up/{level}/{b}"] = u
    if s > 0:
      name = f"u/ustride/{level + 1}"
      caches[name] = model.up_u_stride[level].write_row(caches[name], row(s), u)
  assert not us
  return caches


def _ul_pixel(model: PixelCNNPP, caches: dict, i, j, active) -> tuple[Mixture, dict]:
  """Advances the ``ul`` stream to pixel ``(i, j)`` and returns its mixture there.

  ``active``: the scales s with ``i`` and ``j`` multiples of ``2 ** s`` (static).
  """
  caches = dict(caches)
  num_scales = len(model.down_ul)
  at = lambda s: (i // 2 ** s, j // 2 ** s)  # noqa: E731
  write = lambda s: lambda layer, cache, v: layer.write(cache, *at(s), v)  # noqa: E731
  read = lambda s: lambda layer, cache: layer.at(cache, *at(s))  # noqa: E731
  column = lambda name, s: jax.lax.dynamic_index_in_dim(  # noqa: E731
      caches[name], at(s)[1], axis=1, keepdims=False)
  # ul = down_shift(ul_in_above(x)) + right_shift(ul_in_left(x))
  ul = (jnp.where(i > 0, model.ul_in_above.at(caches["x_above"], i - 1, j), 0.0)
        + jnp.where(j > 0, model.ul_in_left.at(caches["x_left"], i, j - 1), 0.0))
  uls = [ul]
  for s in active:
    for b, block in enumerate(model.down_ul[s]):
      name = f"ul/down/{s}/{b}"
      ul, caches[name] = _block_step(block, caches[name], ul, column(f"urow/down/{s}/{b}", s),
                                     write(s), read(s))
      uls.append(ul)
    if s < num_scales - 1:
      name, layer = f"ul/dstride/{s}", model.down_ul_stride[s]
      caches[name] = layer.write(caches[name], *at(s), ul)
      if s + 1 in active:
        ul = layer.at(caches[name], *at(s + 1))
        uls.append(ul)
  for level in range(num_scales):
    s = num_scales - 1 - level
    if s not in active:
      continue
    ul = uls.pop() if level == 0 else model.up_ul_stride[level - 1].at(
        caches[f"ul/ustride/{level}"], *at(s))
    for b, block in enumerate(model.up_ul[level]):
      name = f"ul/up/{level}/{b}"
      aux = jnp.concatenate([column(f"urow/up/{level}/{b}", s), uls.pop()], axis=-1)
      ul, caches[name] = _block_step(block, caches[name], ul, aux, write(s), read(s))
    if s > 0:
      name = f"ul/ustride/{level + 1}"
      caches[name] = model.up_ul_stride[level].write(caches[name], *at(s), ul)
  assert not uls
  out = layers.at_least_float32(model.out(jax.nn.elu(ul)))
  return split_params(out, model.input_shape[-1], model.num_mixtures), caches


def _write_pixel(model: PixelCNNPP, caches: dict, i, j, x_BxC: jax.Array) -> dict:
  """Records a drawn pixel in the caches of the three input convolutions."""
  x_pad = jnp.concatenate([_to_input(x_BxC), jnp.ones((x_BxC.shape[0], 1))], axis=-1)
  return dict(caches, **{name: layer.write(caches[name], i, j, x_pad) for name, layer in
                         (("x_u", model.u_in), ("x_above", model.ul_in_above),
                          ("x_left", model.ul_in_left))})


def _sample_cached(model: PixelCNNPP, key, num: int, temperature) -> jax.Array:
  h, w, c = model.input_shape
  group = 2 ** (len(model.down_u) - 1)
  scales = range(len(model.down_u))

  def pixels(carry, b, i, di):
    caches, x = carry
    for dj in range(group):  # unrolled: the active scales are static
      j = b * group + dj
      active = [s for s in scales if di % 2 ** s == 0 and dj % 2 ** s == 0]
      mix, caches = _ul_pixel(model, caches, i, j, active)
      value = draw_pixel(jax.random.fold_in(key, i * w + j), mix, temperature)
      value = value.astype(jnp.uint8)
      caches = _write_pixel(model, caches, i, j, value)
      x = x.at[:, i, j].set(value)
    return (caches, x), None

  def rows(carry, a):
    for di in range(group):
      i = a * group + di
      caches, x = carry
      caches = _u_rows(model, caches, i, [s for s in scales if di % 2 ** s == 0])
      carry, _ = jax.lax.scan(lambda cr, b: pixels(cr, b, i, di), (caches, x),
                              jnp.arange(w // group))
    return carry, None

  x0 = jnp.zeros((num, h, w, c), jnp.uint8)
  return jax.lax.scan(rows, (_init_caches(model, num), x0), jnp.arange(h // group))[0][1]


@compiled.model_function(static_argnames=ar.SAMPLE_STATICS, check=ar.check_sample_args)
def sample(model: PixelCNNPP, key: jax.Array, num: int, method: str = "cached",
           temperature: float = 1.0) -> jax.Array:
  """Draws ``num`` images one pixel at a time (all channels of a pixel jointly).

  Args:
    model: a `PixelCNNPP`.
    key: PRNG key; pixel ``t = i * W + j`` uses ``fold_in(key, t)`` whatever the method.
    num: number of images (static).
    method: ``"cached"``: every layer advances one row (``u`` stream) or one pixel
      (``ul`` stream) per step from caches of its inputs, each scale at its own
      rate; ``"naive"``: a ``lax.scan`` over pixels that reruns the whole network.
      The same images for the same key.
    temperature: divides the mixture logits and multiplies the logistic scales.

  Returns:
    ``uint8[num, H, W, C]`` in 0..255.

  Raises:
    ValueError: for an unknown method or a temperature <= 0.

  References:
    Salimans et al., "PixelCNN++", ICLR 2017.
    Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models",
    ICLR 2017 workshop (``method="cached"``).
  """
  if method == "cached":
    return _sample_cached(model, key, num, temperature)
  return sample_naive(model, key, num, temperature)


def sample_naive(model: PixelCNNPP, key: jax.Array, num: int, temperature=1.0,
                 num_steps: int | None = None) -> jax.Array:
  """The naive sampler of `sample`: a ``lax.scan`` over pixels, the whole network each.

  ``num_steps`` (default ``H * W``) stops after that many pixels, leaving the rest
  zero (benchmarks time a prefix of rows this way).
  """
  h, w, c = model.input_shape

  def body(x, t):
    i, j = t // w, t % w
    mix = jax.tree.map(lambda a: a[:, i, j], model(_to_input(x)))
    value = draw_pixel(jax.random.fold_in(key, t), mix, temperature)
    return x.at[:, i, j].set(value.astype(x.dtype)), None

  x0 = jnp.zeros((num, h, w, c), jnp.uint8)
  steps = h * w if num_steps is None else int(num_steps)
  return jax.lax.scan(body, x0, jnp.arange(steps))[0]
