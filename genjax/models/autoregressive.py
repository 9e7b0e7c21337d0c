"""Machinery shared by the autoregressive pixel models (PixelCNN, Gated PixelCNN, ...).

A pixel model maps an image to ``logits`` of ``p(x_i | x_<i)`` at every position:
``[B, H, W, C]`` Bernoulli logits for binarized images (``likelihood="bernoulli"``)
or ``[B, H, W, C, 256]`` softmax logits for 8-bit images (``"categorical"``).
This module holds what does not depend on the network: the config parser, the
log-likelihood and loss, and the two samplers.

Samplers (both one compiled loop, both under ``jax.jit``):

* `sample_naive`: a ``lax.scan`` over the ``H * W * C`` sub-pixels that reruns the
  whole network on the whole image at each step: O(image) work per step.
* `sample_cached`: the fast generation of Ramachandran et al. (2017). A
  `CachedNet` keeps, per layer, a cache of what earlier positions computed and
  evaluates only the new position: O(layers * kernel) work per step. Scans run
  over rows, then columns, then channels.

Randomness convention: sub-pixel ``t = (i * W + j) * C + c`` is drawn from the
noise of the key ``jax.random.fold_in(key, t)`` (`noise`, `draw`), in both
samplers, so for the same key they give the same images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genjax import compiled
from genjax import distributions as dist
from genjax.models import check_image_batch
from genjax.models import parse_fields
from genjax.nn.layers import at_least_float32

LIKELIHOODS = ("bernoulli", "categorical")
NUM_VALUES = 256
METHODS = ("cached", "naive")
_VIEWS = {"bernoulli": "binarized", "categorical": "8bit"}


def parse_config(config, defaults: dict, choices: dict) -> dict:
  """Validates a pixel family's ``config.model`` and fills its defaults.

  Args:
    config: the ``model`` block (``ConfigDict`` or dict).
    defaults: every known field and its default (``defaults["name"]`` is the family);
      int defaults mark fields that must be non-negative ints (``kernel_size``
      fields must also be odd and ``num_layers``/``features`` positive).
    choices: allowed values of the string fields.

  Returns:
    A dict of every field with ``input_shape`` a tuple of ints.

  Raises:
    ValueError: naming the field and what is allowed.
  """
  cfg = parse_fields(config, defaults, choices)
  for name, default in defaults.items():
    if not isinstance(default, int) or isinstance(default, bool):
      continue
    value, minimum = cfg[name], (0 if name == "num_classes" else 1)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
      raise ValueError(f"config.model.{name} must be an int >= {minimum}, got {value!r}")
    if "kernel_size" in name and value % 2 != 1:
      raise ValueError(f"config.model.{name} must be odd, got {value!r}")
    cfg[name] = int(value)
  if cfg["features"] < cfg["input_shape"][2]:
    raise ValueError(f"config.model.features={cfg['features']} must be at least the number "
                     f"of image channels ({cfg['input_shape'][2]}): one group per channel")
  return cfg


def check_config(config) -> None:
  """The experiment-level check: the likelihood must fit the data view, labels the data.

  Raises:
    ValueError: with the fields to change.
  """
  likelihood = config.model.get("likelihood") or "bernoulli"
  want = _VIEWS.get(likelihood)
  if want is not None and config.data.view != want:
    raise ValueError(
        f"config.model.likelihood={likelihood!r} models {want} images, but "
        f"config.data.view={config.data.view!r}; set config.data.view={want!r} or "
        f"config.model.likelihood="
        f"{next(k for k, v in _VIEWS.items() if v == config.data.view)!r}")
  num_classes = config.model.get("num_classes") or 0
  if num_classes:
    from genjax import data as data_lib  # pylint: disable=g-import-not-at-top
    have = data_lib.info(config.data.name)["num_classes"]
    if num_classes != have:
      raise ValueError(f"config.model.num_classes={num_classes} but {config.data.name} has "
                       f"{have} classes; set it to {have} (or 0 for an unconditional model)")


def to_input(x: jax.Array, likelihood: str) -> jax.Array:
  """Data-space images (0/1 or 0..255, any int dtype) to floats in [-1, 1]."""
  top = 1.0 if likelihood == "bernoulli" else float(NUM_VALUES - 1)
  return jnp.asarray(x, jnp.float32) * (2.0 / top) - 1.0


def num_outputs(likelihood: str) -> int:
  """Output features per image channel: 1 logit or 256."""
  return 1 if likelihood == "bernoulli" else NUM_VALUES


def log_prob(logits: jax.Array, x: jax.Array, likelihood: str) -> jax.Array:
  """Per-sub-pixel ``log p(x | logits)`` in nats, ``[...]`` for ``x`` of shape ``[...]``."""
  if likelihood == "bernoulli":
    return dist.bernoulli_log_prob(logits, x)
  idx = jnp.asarray(x).astype(jnp.int32)[..., None]
  return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), idx, axis=-1)[..., 0]


def split_channels(out: jax.Array, input_shape, likelihood: str) -> jax.Array:
  """``[..., C * K]`` network outputs to logits ``[..., C]`` (K = 1) or ``[..., C, K]``,
  at least float32 (a bfloat16 network's outputs are promoted: the softmax, the
  likelihood and the draws are float32)."""
  k = num_outputs(likelihood)
  out = at_least_float32(out).reshape(*out.shape[:-1], input_shape[-1], k)
  return out[..., 0] if k == 1 else out


@compiled.model_function
def conditionals(model, x_BxHxWxC: jax.Array, labels=None) -> jax.Array:
  """The parameters of ``p(x_i | x_<i)`` at every sub-pixel (one network pass).

  Args:
    model: a pixel model: ``model(x_in, labels)`` maps inputs in [-1, 1] to logits.
    x_BxHxWxC: uint8 images in data space (0/1 or 0..255).
    labels: ``int32[B]`` classes, for class-conditional models only.

  Returns:
    Logits ``[B, H, W, C]`` (Bernoulli) or ``[B, H, W, C, 256]`` (categorical).
  """
  check_image_batch({"image": x_BxHxWxC}, model.input_shape)
  return model(to_input(x_BxHxWxC, model.likelihood), labels)


def _batch_conditionals(model, batch):
  check_image_batch(batch, model.input_shape)
  labels = None
  if getattr(model, "num_classes", 0):
    if "label" not in batch:
      raise ValueError("a class-conditional model needs batch['label'] (int32[B])")
    labels = batch["label"]
  return conditionals(model, batch["image"], labels)


@compiled.model_function
def log_likelihood(model, batch, key: jax.Array | None = None) -> jax.Array:
  """Exact ``log p(x) = sum_i log p(x_i | x_<i)`` in nats, ``float32[B]``.

  Conditioned on ``batch["label"]`` for class-conditional models.

  Args:
    model: a pixel model.
    batch: ``{"image": uint8[B, H, W, C], "label": int32[B]}``.
    key: unused (the likelihood is exact); kept for the family protocol.

  Returns:
    ``float32[B]``.

  References:
    van den Oord et al., "Pixel Recurrent Neural Networks", ICML 2016 (eq. 1).
  """
  del key
  lp = log_prob(_batch_conditionals(model, batch), batch["image"], model.likelihood)
  return lp.reshape(lp.shape[0], -1).sum(-1)


@compiled.model_function
def loss(model, batch, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Mean negative log-likelihood in nats per example.

  Args:
    model: a pixel model.
    batch: ``{"image": uint8[B, H, W, C], "label": int32[B]}``.
    key: unused (no randomness); kept for the family protocol.

  Returns:
    ``(loss, metrics)`` with metrics ``loss``, ``nll_nats`` and ``bits_per_dim``.
  """
  nll = -jnp.mean(log_likelihood(model, batch, key))
  dims = math.prod(model.input_shape)
  return nll, {"loss": nll, "nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2.0))}


def noise(key: jax.Array, t, num: int, likelihood: str) -> jax.Array:
  """The randomness of sub-pixel ``t`` for ``num`` images, from ``fold_in(key, t)``.

  ``float32[num]`` uniforms (Bernoulli) or ``float32[num, 256]`` Gumbel noise
  (categorical). Both samplers draw sub-pixel ``t`` from this noise, so they agree
  exactly; the cached sampler computes a whole row's noise before its loop."""
  k = jax.random.fold_in(key, t)
  if likelihood == "bernoulli":
    return jax.random.uniform(k, (num,))
  return jax.random.gumbel(k, (num, NUM_VALUES))


def draw(noise_B: jax.Array, logits: jax.Array, likelihood: str, temperature) -> jax.Array:
  """One sub-pixel for every example: ``logits`` ``[B]`` or ``[B, 256]`` -> int32[B].

  Bernoulli draws compare the uniform of `noise` with ``sigmoid(logits / T)``;
  categorical draws are Gumbel-max: ``argmax(logits / T + gumbel)``."""
  logits = logits / temperature
  if likelihood == "bernoulli":
    return (noise_B < jax.nn.sigmoid(logits)).astype(jnp.int32)
  return jnp.argmax(logits + noise_B, axis=-1).astype(jnp.int32)


def check_sample_args(method: str, temperature, **_) -> None:
  """Raises ValueError for a method not in `METHODS` or a temperature <= 0.

  Other keyword arguments are ignored, so that it checks a whole ``sample`` call
  (the ``check`` of `genjax.compiled.model_function`)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")


def sample_naive(logits_fn: Callable[[jax.Array], jax.Array], key: jax.Array, num: int,
                 input_shape, likelihood: str, temperature=1.0,
                 num_steps: int | None = None) -> jax.Array:
  """Sampling by rerunning the network on the whole image at each sub-pixel.

  Args:
    logits_fn: ``uint8[num, H, W, C] -> logits`` (all positions).
    key: PRNG key (see the module's randomness convention).
    num: number of images (static).
    input_shape: ``(H, W, C)``.
    likelihood: ``"bernoulli"`` or ``"categorical"``.
    temperature: divides the logits.
    num_steps: draw only the first ``num_steps`` sub-pixels (the rest stay 0);
      default all ``H * W * C``. Every step costs the same (one whole-network
      pass), so benchmarks time a prefix and scale it.

  Returns:
    ``uint8[num, H, W, C]``.

  References:
    van den Oord, Kalchbrenner & Kavukcuoglu, "Pixel Recurrent Neural Networks",
    ICML 2016 (sequential generation).
  """
  h, w, c = input_shape
  num_steps = h * w * c if num_steps is None else int(num_steps)

  def body(x, t):
    i, j, ch = t // (w * c), t // c % w, t % c
    logits = logits_fn(x)[:, i, j, ch]
    value = draw(noise(key, t, num, likelihood), logits, likelihood, temperature)
    return x.at[:, i, j, ch].set(value.astype(x.dtype)), None

  x0 = jnp.zeros((num, h, w, c), jnp.uint8)
  return jax.lax.scan(body, x0, jnp.arange(num_steps))[0]


@dataclasses.dataclass(frozen=True)
class CachedNet:
  """A network evaluated one position at a time with per-layer caches.

  Attributes:
    init: ``() -> cache`` (any pytree).
    pixel: ``(cache, i, j, x_BxC) -> (logits at (i, j), cache)``: logits ``[B, C]``
      or ``[B, C, 256]``. ``x_BxC`` (uint8) holds the channels drawn so far at
      ``(i, j)`` and zeros after them; the masks make the later ones irrelevant.
    commit: ``(cache, i, j, x_BxC) -> cache``: records the complete pixel.
    end_row: ``(cache, i, x_BxWxC) -> cache`` run after row ``i`` is complete
      (e.g. Gated PixelCNN's vertical stack), or None.
  """
  init: Callable[[], Any]
  pixel: Callable[..., tuple[jax.Array, Any]]
  commit: Callable[..., Any]
  end_row: Callable[..., Any] | None = None


def sample_cached(net: CachedNet, key: jax.Array, num: int, input_shape, likelihood: str,
                  temperature=1.0) -> jax.Array:
  """Fast sampling: each sub-pixel costs O(layers * kernel) with `CachedNet` caches.

  Nested ``lax.scan`` over rows, columns and channels; the same draws as
  `sample_naive` for the same key.

  Args:
    net: the `CachedNet` of a model (its functions close over the model).
    key, num, input_shape, likelihood, temperature: as in `sample_naive`.

  Returns:
    ``uint8[num, H, W, C]``.

  References:
    Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson,
    Campbell & Huang, "Fast Generation for Convolutional Autoregressive Models",
    ICLR 2017 workshop.
  """
  h, w, c = input_shape

  def channel(carry, xs, i, j):
    cache, pixel_BxC = carry
    ch, noise_B = xs
    logits, cache = net.pixel(cache, i, j, pixel_BxC)
    value = draw(noise_B, logits[:, ch], likelihood, temperature)
    return (cache, pixel_BxC.at[:, ch].set(value.astype(jnp.uint8))), None

  def column(carry, xs, i):
    cache, x = carry
    j, noise_CxB = xs
    pixel0 = jnp.zeros((num, c), jnp.uint8)
    (cache, pixel_BxC), _ = jax.lax.scan(
        lambda cr, xs_c: channel(cr, xs_c, i, j), (cache, pixel0),
        (jnp.arange(c), noise_CxB))
    cache = net.commit(cache, i, j, pixel_BxC)
    return (cache, x.at[:, i, j].set(pixel_BxC)), None

  def row(carry, i):
    # the row's noise in one vectorised call, outside the per-sub-pixel loop
    t_WxC = (i * w + jnp.arange(w)[:, None]) * c + jnp.arange(c)[None, :]
    noise_WxCxB = jax.vmap(jax.vmap(lambda t: noise(key, t, num, likelihood)))(t_WxC)
    (cache, x), _ = jax.lax.scan(lambda cr, xs: column(cr, xs, i), carry,
                                 (jnp.arange(w), noise_WxCxB))
    if net.end_row is not None:
      cache = net.end_row(cache, i, x[:, i])
    return (cache, x), None

  x0 = jnp.zeros((num, h, w, c), jnp.uint8)
  return jax.lax.scan(row, (net.init(), x0), jnp.arange(h))[0][1]


SAMPLE_STATICS = ("num", "method")  # the static arguments of a pixel family's sample


def sample(logits_fn, cached_net: CachedNet, key, num, input_shape, likelihood,
           method: str = "cached", temperature=1.0) -> jax.Array:
  """Dispatches to `sample_cached` or `sample_naive` (``method``)."""
  check_sample_args(method, temperature)
  if method == "naive":
    return sample_naive(logits_fn, key, num, input_shape, likelihood, temperature)
  return sample_cached(cached_net, key, num, input_shape, likelihood, temperature)
