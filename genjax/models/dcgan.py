"""Deep convolutional GAN (Radford et al. 2016): non-saturating, hinge or WGAN-GP.

The generator maps ``z ~ N(0, I)`` (and, when class-conditional, a one-hot label)
through a dense layer to a coarse grid and then through stride-2 transposed
convolutions to an image in ``[-1, 1]`` (tanh). The discriminator is a stack of
stride-2 convolutions with leaky ReLUs and a linear output; a class-conditional
one adds the projection term ``<embed(y), phi(x)>`` (Miyato & Koyama 2018).
Spectral normalisation (`genjax.nn.SpectralNorm`) and an R1 penalty are
options for the discriminator; the discriminator has no batch normalisation
(WGAN-GP's penalty is per example), the generator an optional per-example
layer normalisation.

One training step (`update`, the model protocol's hook) makes ``d_steps``
discriminator steps, each on its own ``1/d_steps`` slice of the real batch with
fresh noise (Gulrajani et al., Algorithm 1), then one generator step on a full
batch of noise, each player with its own optax optimizer (`make_optimizer`),
then updates the exponential moving average of the generator's weights
(``model.ema_generator``, in the model state, so it is checkpointed).
`sample` and the evaluation use the averaged generator. A GAN has no
likelihood: `log_likelihood` raises ``NotImplementedError``; its quality is
measured with `genjax.metrics` (FID, KID, precision/recall).

``dtype="bfloat16"``: both players' layers compute in bfloat16; parameters, the
moving average, the generated images and discriminator outputs (promoted to
float32), the losses, the gradient and R1 penalties and spectral normalisation's
power iteration stay float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from genjax import compiled
from genjax import nn
from genjax import train as train_lib
from genjax.models import check_field
from genjax.models import check_image_batch
from genjax.nn import spectral
from genjax.nn import transposed

LIKELIHOOD = None  # no likelihood: experiments.evaluate reports sample metrics only
LOSSES = ("non_saturating", "hinge", "wgan_gp")
VIEWS = ("8bit", "binarized")
PLAYERS = ("generator", "discriminator")
_DEFAULTS = dict(name="dcgan", input_shape=None, view="8bit", latent_dim=64,
                 g_channels=(32, 64), d_channels=(32, 64), g_norm="layer",
                 loss="non_saturating", gp_weight=10.0, r1_weight=0.0,
                 spectral_norm=False, d_steps=1, ema_decay=0.999, ema_warmup=True,
                 num_classes=0, dtype="float32")


EMAWeight = train_lib.EMAWeight  # the weights of ema_generator


class Generator(nnx.Module):
  """``z [B, L]`` (+ label) -> dense -> 2x transposed convs -> 3x3 conv -> tanh."""

  def __init__(self, input_shape, latent_dim, channels, norm, num_classes, *, dtype=None,
               rngs: nnx.Rngs):
    h, w, c = input_shape
    n = len(channels)
    self.input_shape = tuple(input_shape)
    self.num_classes = num_classes
    self.dtype = dtype  # of the layers; None: float32
    self.base_shape = (nn.downsampled_size(h, n), nn.downsampled_size(w, n), channels[-1])
    self.inp = nn.linear(latent_dim + num_classes, math.prod(self.base_shape), dtype=dtype,
                         rngs=rngs)
    ins = tuple(reversed(channels))
    outs = ins[1:] + (channels[0],)
    self.ups = nnx.List([nnx.ConvTranspose(i, o, (4, 4), strides=(2, 2), padding="SAME",
                                           kernel_init=nn.kernel_init(), dtype=dtype,
                                           rngs=rngs)
                         for i, o in zip(ins, outs)])
    widths = (self.base_shape[-1],) + outs  # before each upsampling, and at the end
    self.norms = (nnx.List([nnx.GroupNorm(f, num_groups=1, dtype=dtype, rngs=rngs)
                            for f in widths]) if norm == "layer" else None)
    self.out = nn.conv(channels[0], c, 3, dtype=dtype, rngs=rngs)

  def __call__(self, z_BxL: jax.Array, y_B: jax.Array | None = None) -> jax.Array:
    """Images in ``[-1, 1]``, at least float32."""
    if self.num_classes:
      z_BxL = jnp.concatenate([z_BxL, jax.nn.one_hot(y_B, self.num_classes)], -1)
    h = self.inp(nn.to_compute(z_BxL, self.dtype)).reshape(-1, *self.base_shape)
    for i in range(len(self.ups) + 1):
      h = jax.nn.relu(h if self.norms is None else self.norms[i](h))
      if i < len(self.ups):
        h = transposed.apply(self.ups[i], h)  # fast kernel gradient on the CPU
    return nn.at_least_float32(jnp.tanh(self.out(nn.crop(h, *self.input_shape[:2]))))


class Discriminator(nnx.Module):
  """Stride-2 convs with leaky ReLU, a linear output and an optional projection."""

  def __init__(self, input_shape, channels, num_classes, use_sn, *, dtype=None,
               rngs: nnx.Rngs):
    h, w, c = input_shape
    wrap = (lambda layer: spectral.SpectralNorm(layer, rngs=rngs)) if use_sn else (
        lambda layer: layer)
    self.dtype = dtype  # of the layers; None: float32
    ins = (c,) + tuple(channels[:-1])
    self.convs = nnx.List([wrap(nn.conv(i, o, 4, strides=2, dtype=dtype, rngs=rngs))
                           for i, o in zip(ins, channels)])
    n = len(channels)
    flat = nn.downsampled_size(h, n) * nn.downsampled_size(w, n) * channels[-1]
    self.out = wrap(nn.linear(flat, 1, dtype=dtype, rngs=rngs))
    self.embed = (nnx.Embed(num_classes, flat, embedding_init=nn.kernel_init(), dtype=dtype,
                            rngs=rngs) if num_classes else None)

  def __call__(self, x_BxHxWxC: jax.Array, y_B: jax.Array | None = None) -> jax.Array:
    """Raw outputs (logits or critic values) ``[B]``, at least float32."""
    h = nn.to_compute(x_BxHxWxC, self.dtype)
    for conv in self.convs:
      h = jax.nn.leaky_relu(conv(h), 0.2)
    phi_BxF = h.reshape(h.shape[0], -1)
    out_B = self.out(phi_BxF)[:, 0]
    if self.embed is not None:
      out_B = out_B + jnp.sum(self.embed(y_B) * phi_BxF, -1)
    return nn.at_least_float32(out_B)


class DCGAN(nnx.Module):
  """The two players and the moving-average generator; see `build`."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs):
    for k in ("input_shape", "view", "latent_dim", "loss", "gp_weight", "r1_weight",
              "d_steps", "ema_decay", "ema_warmup", "num_classes"):
      setattr(self, k, cfg[k])
    dtype = nn.compute_dtype(cfg["dtype"])
    self.generator = Generator(cfg["input_shape"], cfg["latent_dim"], cfg["g_channels"],
                               cfg["g_norm"], cfg["num_classes"], dtype=dtype, rngs=rngs)
    self.discriminator = Discriminator(cfg["input_shape"], cfg["d_channels"],
                                       cfg["num_classes"], cfg["spectral_norm"], dtype=dtype,
                                       rngs=rngs)
    self.ema_generator = train_lib.ema_copy(self.generator)


_check = check_field  # the shared field check of genjax.models


def _ints(name, value) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    out = ()
  _check(bool(out) and all(o > 0 for o in out) and list(out) == list(value), name,
         "a non-empty sequence of positive ints", value)
  return out


def _settings(config) -> dict:
  unknown = sorted(set(config.keys()) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown field(s) {', '.join('config.model.' + k for k in unknown)} "
                     f"for dcgan; known fields: {', '.join(_DEFAULTS)}")
  cfg = {k: (v if config.get(k) is None else config.get(k)) for k, v in _DEFAULTS.items()}
  _check(cfg["name"] == "dcgan", "name", "'dcgan'", cfg["name"])
  shape = cfg["input_shape"]
  _check(shape is not None and len(shape) == 3, "input_shape", "(H, W, C)", shape)
  cfg["input_shape"] = _ints("input_shape", shape)
  for name in ("g_channels", "d_channels"):
    cfg[name] = _ints(name, cfg[name])
  for name, allowed in (("loss", LOSSES), ("view", VIEWS), ("g_norm", ("layer", "none")),
                        ("dtype", tuple(nn.DTYPES))):
    _check(cfg[name] in allowed, name, f"one of {', '.join(map(repr, allowed))}", cfg[name])
  for name, low in (("latent_dim", 1), ("d_steps", 1), ("num_classes", 0)):
    _check(isinstance(cfg[name], int) and cfg[name] >= low, name, f"an int >= {low}",
           cfg[name])
  for name in ("gp_weight", "r1_weight"):
    _check(float(cfg[name]) >= 0, name, "a number >= 0", cfg[name])
  _check(0.0 <= float(cfg["ema_decay"]) < 1.0, "ema_decay", "in [0, 1)", cfg["ema_decay"])
  cfg.update(gp_weight=float(cfg["gp_weight"]), r1_weight=float(cfg["r1_weight"]),
             ema_decay=float(cfg["ema_decay"]), spectral_norm=bool(cfg["spectral_norm"]),
             ema_warmup=bool(cfg["ema_warmup"]))
  return cfg


def build(config, key: jax.Array) -> DCGAN:
  """Builds a DCGAN from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` or dict with ``input_shape=(H, W, C)`` and optionally
      ``view`` (``"8bit"`` or ``"binarized"``: the data the images hold),
      ``latent_dim``, ``g_channels`` and ``d_channels`` (one stride-2 stage per
      width, from high to low resolution), ``g_norm`` (``"layer"`` or
      ``"none"``), ``loss`` (``"non_saturating"``, ``"hinge"`` or
      ``"wgan_gp"``), ``gp_weight`` (WGAN-GP's lambda), ``r1_weight`` (gamma of
      the R1 penalty, 0 disables), ``spectral_norm`` (discriminator),
      ``d_steps`` (discriminator steps per generator step), ``ema_decay``,
      ``ema_warmup`` (ramp the decay up as ``min(ema_decay, (1 + t) / (10 + t))``
      after ``t`` generator updates, so that early samples are not dominated by
      the random initial weights), ``num_classes`` (0: unconditional; else a class-conditional generator and
      a projection discriminator) and ``dtype`` (``"float32"`` or ``"bfloat16"``: both
      players' computation; parameters, images, discriminator outputs and losses
      stay float32).
    key: PRNG key of the initialisation.

  Returns:
    The `DCGAN` module (``generator``, ``discriminator``, ``ema_generator``).

  Raises:
    ValueError: naming the field, for an unknown field or an invalid value.

  References:
    Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep
    Convolutional Generative Adversarial Networks", ICLR 2016.
  """
  return DCGAN(_settings(config), rngs=nnx.Rngs(params=key))


def check_config(config) -> None:
  """The experiment-level checks: the data view and the batch split of ``d_steps``."""
  cfg = _settings(config.model)
  if cfg["view"] != config.data.view:
    raise ValueError(
        f"config.model.view={cfg['view']!r} but config.data.view={config.data.view!r}; "
        "set both to the same view (GANs are usually trained on '8bit' images)")
  if config.batch_size % cfg["d_steps"]:
    raise ValueError(
        f"config.batch_size={config.batch_size} must be divisible by "
        f"config.model.d_steps={cfg['d_steps']} (each discriminator step takes its "
        "own slice of the real batch)")


def make_optimizer(model: DCGAN, optimizer_config, total_steps: int) -> dict:
  """One optax optimizer per player: ``{"generator": ..., "discriminator": ...}``.

  Each player's settings are ``config.optimizer`` with the entries of
  ``config.optimizer.generator`` / ``.discriminator`` (e.g. ``learning_rate``)
  on top. The discriminator's schedule counts its own updates
  (``d_steps * total_steps``).
  """
  base = optimizer_config.to_dict() if hasattr(optimizer_config, "to_dict") else dict(
      optimizer_config)
  out = {}
  for name, steps in zip(PLAYERS, (total_steps, total_steps * model.d_steps)):
    cfg = ml_collections.ConfigDict({k: v for k, v in base.items() if k not in PLAYERS})
    cfg.update(base.get(name) or {})
    out[name] = nnx.Optimizer(getattr(model, name), train_lib.make_tx(cfg, steps),
                              wrt=nnx.Param)
  return out


def _to_unit(model: DCGAN, image_uint8: jax.Array) -> jax.Array:
  top = 1.0 if model.view == "binarized" else 255.0
  return jnp.asarray(image_uint8, jnp.float32) * (2.0 / top) - 1.0


def _to_data(model: DCGAN, x_unit: jax.Array) -> jax.Array:
  if model.view == "binarized":
    return (x_unit > 0).astype(jnp.uint8)
  return jnp.clip(jnp.round((x_unit + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def _labels(model: DCGAN, batch) -> jax.Array | None:
  return jnp.asarray(batch["label"], jnp.int32) if model.num_classes else None


def _input_grad(disc, x, y) -> jax.Array:
  """``d D(x) / d x`` per example (D's outputs are independent across the batch)."""
  return jax.grad(lambda x_: jnp.sum(disc(x_, y)))(x)


def gradient_penalty(disc, x_real, x_fake, y, key: jax.Array) -> jax.Array:
  """WGAN-GP's ``E (||grad D(x_hat)|| - 1)^2`` at ``x_hat = e x_real + (1 - e) x_fake``.

  Args:
    disc: a `Discriminator` (or any ``(x, y) -> float[B]``).
    x_real: real images in ``[-1, 1]``, ``[B, H, W, C]``.
    x_fake: generated images, same shape.
    y: labels ``int32[B]`` or None.
    key: PRNG key of ``e ~ U[0, 1]`` (one per example).

  Returns:
    The scalar penalty (without its weight).

  References:
    Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017 (eq. 3).
  """
  eps_B = jax.random.uniform(key, (x_real.shape[0],))[:, None, None, None]
  x_hat = eps_B * x_real + (1.0 - eps_B) * x_fake
  g = _input_grad(disc, x_hat, y)
  norm_B = jnp.sqrt(jnp.sum(g.reshape(g.shape[0], -1) ** 2, -1) + 1e-12)
  return jnp.mean((norm_B - 1.0) ** 2)


def r1_penalty(disc, x_real, y) -> jax.Array:
  """R1: ``E ||grad_x D(x_real)||^2`` (Mescheder et al., ICML 2018), without gamma/2."""
  g = _input_grad(disc, x_real, y)
  return jnp.mean(jnp.sum(g.reshape(g.shape[0], -1) ** 2, -1))


def d_loss(model: DCGAN, disc, x_real, x_fake, y, key) -> tuple[jax.Array, dict]:
  """The discriminator's loss on real and fake images of ``[-1, 1]``, and diagnostics."""
  d_real, d_fake = disc(x_real, y), disc(x_fake, y)
  if model.loss == "non_saturating":  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
    value = jnp.mean(jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake))
  elif model.loss == "hinge":
    value = jnp.mean(jax.nn.relu(1.0 - d_real) + jax.nn.relu(1.0 + d_fake))
  else:
    value = jnp.mean(d_fake - d_real)
  aux = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
  if model.loss == "wgan_gp":
    aux["gp"] = gradient_penalty(disc, x_real, x_fake, y, key)
    value = value + model.gp_weight * aux["gp"]
  if model.r1_weight:
    aux["r1"] = r1_penalty(disc, x_real, y)
    value = value + 0.5 * model.r1_weight * aux["r1"]
  return value, aux


def g_loss(model: DCGAN, disc, x_fake, y) -> jax.Array:
  """The generator's loss: ``softplus(-D(G(z)))`` (non-saturating) or ``-D(G(z))``."""
  d_fake = disc(x_fake, y)
  return jnp.mean(jax.nn.softplus(-d_fake) if model.loss == "non_saturating" else -d_fake)


def ema_decay_at(model: DCGAN, step: jax.Array) -> jax.Array:
  """The decay of the ``step``-th update (`genjax.train.ema_decay` of the model's fields)."""
  return train_lib.ema_decay(model.ema_decay, model.ema_warmup, step)


def ema_update(model: DCGAN, step: jax.Array) -> None:
  """``ema <- d * ema + (1 - d) * generator`` in place, ``d = ema_decay_at(model, step)``.

  Args:
    model: the `DCGAN`.
    step: generator updates made so far, this one included.
  """
  train_lib.ema_update(model.ema_generator, model.generator, ema_decay_at(model, step))


def update(model: DCGAN, opt: dict, batch, key: jax.Array) -> dict[str, jax.Array]:
  """One training step of both players, in place (the protocol's ``update`` hook).

  Returns:
    ``d_loss``, ``g_loss``, ``d_real`` and ``d_fake`` (mean raw discriminator
    outputs on the real and generated images of the discriminator steps: logits,
    or critic values for WGAN-GP), ``gp``/``r1`` when used, and each player's
    ``{d,g}_grad_norm``, ``{d,g}_param_norm`` and ``{d,g}_update_norm``; the
    discriminator's numbers are means over its ``d_steps`` steps.

  References:
    Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014 (Algorithm 1).
  """
  check_image_batch(batch, model.input_shape)
  x, y = _to_unit(model, batch["image"]), _labels(model, batch)
  b = x.shape[0] // model.d_steps
  d_metrics = []
  for i in range(model.d_steps):
    k_z, k_gp = jax.random.split(jax.random.fold_in(key, i))
    x_real = x[i * b:(i + 1) * b]
    y_i = None if y is None else y[i * b:(i + 1) * b]
    z = jax.random.normal(k_z, (b, model.latent_dim))
    x_fake = jax.lax.stop_gradient(model.generator(z, y_i))
    spectral.power_iteration(model.discriminator)
    loss, aux, norms = train_lib.gradient_step(
        model.discriminator, opt["discriminator"],
        lambda d: d_loss(model, d, x_real, x_fake, y_i, k_gp))
    d_metrics.append({"d_loss": loss, **aux, **{f"d_{k}": v for k, v in norms.items()}})
  metrics = {k: jnp.mean(jnp.stack([m[k] for m in d_metrics])) for k in d_metrics[0]}
  k_g = jax.random.fold_in(key, model.d_steps)
  z = jax.random.normal(k_g, (x.shape[0], model.latent_dim))
  loss, _, norms = train_lib.gradient_step(
      model.generator, opt["generator"],
      lambda g: (g_loss(model, model.discriminator, g(z, y), y), {}))
  ema_update(model, opt["generator"].step[...])
  return {**metrics, "g_loss": loss, **{f"g_{k}": v for k, v in norms.items()}}


@compiled.model_function
def loss(model: DCGAN, batch, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The discriminator's loss on ``batch`` and fresh fakes (no update), and metrics.

  The protocol's ``loss``; training goes through `update` (two players), so this
  is a diagnostic: ``(d_loss, {"d_loss", "g_loss", "d_real", "d_fake", ...})``.
  """
  check_image_batch(batch, model.input_shape)
  x, y = _to_unit(model, batch["image"]), _labels(model, batch)
  k_z, k_gp = jax.random.split(key)
  x_fake = model.generator(jax.random.normal(k_z, (x.shape[0], model.latent_dim)), y)
  value, aux = d_loss(model, model.discriminator, x, x_fake, y, k_gp)
  return value, {"d_loss": value, "g_loss": g_loss(model, model.discriminator, x_fake, y),
                 **aux}


@compiled.model_function
def eval_metrics(model: DCGAN, batch, key: jax.Array) -> dict[str, jax.Array]:
  """Per-example raw D outputs on held-out real images and on EMA-generator samples.

  ``{"d_real": float[B], "d_fake": float[B]}``; a gap between the train and test
  ``d_real`` shows the discriminator overfitting."""
  check_image_batch(batch, model.input_shape)
  y = _labels(model, batch)
  z = jax.random.normal(key, (batch["image"].shape[0], model.latent_dim))
  return {"d_real": model.discriminator(_to_unit(model, batch["image"]), y),
          "d_fake": model.discriminator(model.ema_generator(z, y), y)}


def log_likelihood(model: DCGAN, batch, key: jax.Array, **kwargs) -> jax.Array:
  """A GAN defines no likelihood: always raises ``NotImplementedError``."""
  del model, batch, key, kwargs
  raise NotImplementedError(
      "a GAN defines no likelihood: its generator is an implicit model (no density "
      "p(x)), so there is no log-likelihood or bits/dim. Measure it with sample "
      "metrics instead: genjax.metrics.fid / kid / precision_recall, or "
      "python -m experiments.evaluate, which reports them for MNIST-shaped data.")


@compiled.model_function(static_argnames=("num", "ema"))
def sample(model: DCGAN, key: jax.Array, num: int, labels: jax.Array | None = None,
           ema: bool = True) -> jax.Array:
  """Images from the (moving-average) generator, in the data's own space.

  Args:
    model: a `DCGAN`.
    key: PRNG key of ``z``.
    num: number of images (static).
    labels: ``int32[num]`` classes for a conditional model (default
      ``arange(num) % num_classes``); ignored by an unconditional one.
    ema: use the moving-average generator (default) or the trained one.

  Returns:
    ``uint8[num, H, W, C]``: 0..255 for 8-bit data, 0/1 (``x > 0``) for binarized.

  References:
    Radford, Metz & Chintala, ICLR 2016; Karras et al., "Progressive Growing of
    GANs", ICLR 2018 (the moving average of the generator's weights).
  """
  y = None
  if model.num_classes:
    y = jnp.arange(num) % model.num_classes if labels is None else jnp.asarray(labels)
  gen = model.ema_generator if ema else model.generator
  return _to_data(model, gen(jax.random.normal(key, (num, model.latent_dim)), y))
