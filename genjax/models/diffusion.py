"""Diffusion models: DDPM (Ho et al. 2020) and the variational diffusion bound (VDM).

Notation of Kingma et al. (2021). Time runs over ``t in [0, 1]``; the schedule is
``gamma(t) = -log SNR(t)``, increasing from ``gamma(0)`` (almost clean) to
``gamma(1)`` (almost pure noise), with ``alpha_t^2 = sigmoid(-gamma(t))`` and
``sigma_t^2 = sigmoid(gamma(t))``. The forward process is
``q(z_t | x) = N(alpha_t x, sigma_t^2 I)`` on images mapped to ``[-1, 1]``: the
8-bit value ``k`` sits at the centre of its bin, ``x_k = (2k + 1) / 256 - 1``.

Schedules (``config.model.schedule``):

* ``"linear"``: DDPM's linear beta schedule in its continuous-time form (the
  VP-SDE of Song et al. 2021): ``log abar(t) = -(b0 s + (b1 - b0) s^2 / 2)``,
  ``b0 = 0.1``, ``b1 = 20`` (beta from 1e-4 to 0.02 at 1,000 steps), with
  ``s = t_min + (1 - t_min) t`` and ``t_min = 1e-3`` so that ``gamma(0)`` is finite
  (about -9.2).
* ``"cosine"``: ``abar(t) = cos^2(a t + b)`` (Nichol & Dhariwal 2021), truncated
  to ``gamma in [gamma_min, gamma_max]``: ``gamma(t) = 2 log tan(a t + b)``.
* ``"learned"``: VDM's monotone network, whose end points ``gamma(0)`` and
  ``gamma(1)`` (started at ``gamma_min`` and ``gamma_max``) and shape are trained
  with the bound (the plain gradient of the bound; VDM's variance-minimising
  gradient for the interior is not implemented).

``timesteps = T > 0`` makes time discrete: training and the bound use the grid
``t_i = i / T``; ``T = 0`` is continuous time. The network predicts the noise
(``parameterization="eps"``) or ``v = alpha eps - sigma x`` (``"v"``, Salimans &
Ho 2022). Losses: ``"simple"`` is Ho et al.'s unweighted MSE on the prediction;
``"vdm"`` is the variational bound itself, ``prior + reconstruction + diffusion``:

* prior: ``KL(q(z_1 | x) || N(0, I))``;
* reconstruction: ``-log p(x | z_0)``, a discretised Gaussian over the 256 values
  of each sub-pixel (the softmax of ``-(z_0 / alpha_0 - x_k)^2 / (2 sigma_0^2 /
  alpha_0^2)`` over ``k``);
* diffusion: ``T/2 E_i[expm1(gamma(t_i) - gamma(t_{i-1})) ||eps - eps_hat||^2]``
  for discrete time, ``1/2 E_t[gamma'(t) ||eps - eps_hat||^2]`` for continuous
  time, one Monte-Carlo draw of the time per example (spread over the batch as
  VDM's low-discrepancy sampler does).

The model keeps an exponential moving average of its weights (``model.ema``, in the
checkpoint); ``log_likelihood`` and ``sample`` use it unless ``ema=False``. With
``num_classes > 0`` the network is class-conditional; training drops the label with
probability ``label_dropout`` (to a null class), so that sampling can use
classifier-free guidance ``eps = (1 + w) eps(z, y) - w eps(z, null)``.

``dtype="bfloat16"`` computes the U-Net in bfloat16 (GroupNorm statistics and the
attention softmax in float32, as Flax and JAX do); its prediction is promoted to
float32, and the parameters, the schedule (learned or not), the forward process,
every loss and bound term and the samplers stay float32.

References:
  Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
  Kingma, Salimans, Poole & Ho, "Variational Diffusion Models", NeurIPS 2021.
  Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
  Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
  Salimans & Ho, "Progressive Distillation for Fast Sampling", ICLR 2022 (v).
  Ho & Salimans, "Classifier-Free Diffusion Guidance", 2021.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from genjax import compiled
from genjax import nn
from genjax import train as train_lib
from genjax.models import check_field
from genjax.models import check_image_batch
from genjax.models import parse_fields

LIKELIHOOD = ("lower bound (the variational diffusion bound: prior + reconstruction + "
              "diffusion, a Monte-Carlo estimate over num_time_samples times; "
              "conditional on the label for a class-conditional model)")
SCHEDULES = ("linear", "cosine", "learned")
PARAMETERIZATIONS = ("eps", "v")
LOSSES = ("simple", "vdm")
SAMPLERS = ("ancestral", "ddim", "ode")
_DEFAULTS = dict(
    name="diffusion", input_shape=None, channels=32, channel_mults=(1, 2, 2),
    num_res_blocks=1, attention_resolutions=(7,), num_heads=1, num_groups=8, dropout=0.0,
    schedule="cosine", timesteps=1000, gamma_min=-13.3, gamma_max=5.0,
    parameterization="eps", loss="vdm", num_classes=0, label_dropout=0.1,
    ema_decay=0.9999, ema_warmup=True, schedule_width=1024, sample_steps=0,
    sampler="ancestral", guidance=0.0, dtype="float32", fourier_features=())
_LINEAR_B0, _LINEAR_B1, _LINEAR_T_MIN = 0.1, 20.0, 1e-3
_LEVELS = 256  # 8-bit data


# ------------------------------------------------------------------ the network


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
  """Sinusoidal features ``[B, dim]`` of ``1000 t`` (the Transformer's, as DDPM)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t_B[:, None].astype(jnp.float32) * freqs[None]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _norm(channels: int, groups: int, dtype, rngs: nnx.Rngs) -> nnx.GroupNorm:
  return nnx.GroupNorm(channels, num_groups=math.gcd(channels, groups), dtype=dtype,
                       rngs=rngs)


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-conv twice, the time embedding added between; a 1x1 skip
  convolution when the width changes; the last convolution starts at zero."""

  def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float,
               *, dtype=None, rngs: nnx.Rngs):
    self.norm1 = _norm(in_ch, groups, dtype, rngs)
    self.conv1 = nn.conv(in_ch, out_ch, dtype=dtype, rngs=rngs)
    self.emb = nn.linear(emb_dim, out_ch, dtype=dtype, rngs=rngs)
    self.norm2 = _norm(out_ch, groups, dtype, rngs)
    self.conv2 = nn.conv(out_ch, out_ch, zero_init=True, dtype=dtype, rngs=rngs)
    self.skip = nn.conv(in_ch, out_ch, 1, dtype=dtype, rngs=rngs) if in_ch != out_ch else None
    self.dropout = dropout

  def __call__(self, x, emb, key):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = h + self.emb(jax.nn.silu(emb))[:, None, None, :]
    h = nn.dropout(key, self.dropout, jax.nn.silu(self.norm2(h)))
    return (x if self.skip is None else self.skip(x)) + self.conv2(h)


class AttentionBlock(nnx.Module):
  """Self-attention over the ``H * W`` positions, residual (output projection at zero)."""

  def __init__(self, channels: int, num_heads: int, groups: int, *, dtype=None,
               rngs: nnx.Rngs):
    if channels % num_heads:
      raise ValueError(f"config.model.num_heads={num_heads} must divide every width; "
                       f"{channels} channels do not split into {num_heads} heads")
    self.norm = _norm(channels, groups, dtype, rngs)
    self.qkv = nn.linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
    self.proj = nnx.Linear(channels, channels, kernel_init=nnx.initializers.zeros_init(),
                           dtype=dtype, rngs=rngs)
    self.num_heads = num_heads

  def __call__(self, x_BxHxWxC):
    b, h, w, c = x_BxHxWxC.shape
    qkv = self.qkv(self.norm(x_BxHxWxC)).reshape(b, h * w, 3, self.num_heads,
                                                 c // self.num_heads)
    out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    return x_BxHxWxC + self.proj(out.reshape(b, h, w, c))


class UNet(nnx.Module):
  """The DDPM U-Net: ``(z [B, H, W, C], t [B], label [B] | None) -> [B, H, W, C]``.

  ``len(channel_mults)`` resolutions, each with ``num_res_blocks`` residual blocks
  (and self-attention where the resolution is in ``attention_resolutions``), a
  stride-2 convolution down and a resize-convolution up between them, skip
  connections from every block of the way down to the way up, and a middle of
  residual-attention-residual at the lowest resolution. ``dtype``: the computation's
  (None: float32); the output is at least float32.
  """

  def __init__(self, input_shape, channels, channel_mults, num_res_blocks,
               attention_resolutions, num_heads, num_groups, dropout, num_classes,
               fourier_features=(), *, dtype=None, rngs: nnx.Rngs):
    h, _, c = input_shape
    emb = 4 * channels
    self.channels, self.input_shape, self.dtype = channels, tuple(input_shape), dtype
    self.fourier_features = tuple(fourier_features)
    kw = dict(dtype=dtype, rngs=rngs)
    self.temb1, self.temb2 = nn.linear(channels, emb, **kw), nn.linear(emb, emb, **kw)
    self.label_embed = (nnx.Embed(num_classes + 1, emb, **kw) if num_classes else None)
    self.conv_in = nn.conv(c * (1 + 2 * len(self.fourier_features)), channels, **kw)

    def block(i, o, res):
      attn = (AttentionBlock(o, num_heads, num_groups, **kw)
              if res in attention_resolutions else None)
      return nnx.List([ResBlock(i, o, emb, num_groups, dropout, **kw), attn])

    down, skips, sizes, width, res = [], [channels], [h], channels, h
    for level, mult in enumerate(channel_mults):
      for _ in range(num_res_blocks):
        down.append(block(width, channels * mult, res))
        width = channels * mult
        skips.append(width)
      if level + 1 < len(channel_mults):
        down.append(nn.Downsample(width, width, **kw))
        res = nn.downsampled_size(res, 1)
        skips.append(width)
        sizes.append(res)
    self.down = nnx.List(down)
    self.mid = nnx.List([ResBlock(width, width, emb, num_groups, dropout, **kw),
                         AttentionBlock(width, num_heads, num_groups, **kw),
                         ResBlock(width, width, emb, num_groups, dropout, **kw)])
    up = []
    for level, mult in reversed(list(enumerate(channel_mults))):
      for _ in range(num_res_blocks + 1):
        up.append(block(width + skips.pop(), channels * mult, res))
        width = channels * mult
      if level > 0:
        up.append(nn.Upsample(width, width, **kw))
        sizes.pop()
        res = sizes[-1]
    self.up = nnx.List(up)
    self.norm_out = _norm(width, num_groups, dtype, rngs)
    self.conv_out = nn.conv(width, c, zero_init=True, **kw)

  def __call__(self, z_BxHxWxC, t_B, label_B=None, key=None):
    emb = self.temb2(jax.nn.silu(self.temb1(timestep_embedding(t_B, self.channels))))
    if self.label_embed is not None:
      emb = emb + self.label_embed(label_B)
    num_blocks = 2 + sum(not isinstance(layer, (nn.Downsample, nn.Upsample))
                         for layer in (*self.down, *self.up))
    keys = iter(jax.random.split(key, num_blocks) if key is not None else [None] * num_blocks)
    z = fourier_features(z_BxHxWxC, self.fourier_features)
    h = self.conv_in(nn.to_compute(z, self.dtype))
    hs = [h]
    for layer in self.down:
      if isinstance(layer, nn.Downsample):
        h = layer(h)
      else:
        h = layer[0](h, emb, next(keys))
        h = h if layer[1] is None else layer[1](h)
      hs.append(h)
    h = self.mid[2](self.mid[1](self.mid[0](h, emb, next(keys))), emb, next(keys))
    for layer in self.up:
      if isinstance(layer, nn.Upsample):
        skip = hs[-1]
        h = nn.crop(layer(h), skip.shape[1], skip.shape[2])
      else:
        h = layer[0](jnp.concatenate([h, hs.pop()], axis=-1), emb, next(keys))
        h = h if layer[1] is None else layer[1](h)
    return nn.at_least_float32(self.conv_out(jax.nn.silu(self.norm_out(h))))


def fourier_features(z_BxHxWxC: jax.Array, exponents: tuple[int, ...]) -> jax.Array:
  """``z`` and, per exponent ``n``, ``sin`` and ``cos`` of ``2^n 2 pi z`` (VDM's input
  features), stacked on the channels: ``[..., C (1 + 2 len(exponents))]``.

  With ``n = 7`` the period is one 8-bit bin (``1/128`` on ``[-1, 1]``), so the
  features tell the network where ``z`` sits inside its bin: what it needs to
  predict the noise at high signal-to-noise ratios, where the bound's fine-scale
  bits are decided. In float32 (the features of a bfloat16 ``z`` would be noise).
  """
  if not exponents:
    return z_BxHxWxC
  z = z_BxHxWxC.astype(jnp.float32)
  w = 2.0 * math.pi * jnp.exp2(jnp.asarray(exponents, jnp.float32))
  zw = (z[..., None] * w).reshape(*z.shape[:-1], -1)  # channel-major, exponent-minor
  return jnp.concatenate([z, jnp.sin(zw), jnp.cos(zw)], axis=-1)


class _Monotone(nnx.Module):
  """A dense layer with non-negative weights (``|W|``): monotone in its input."""

  def __init__(self, n_in, n_out, *, use_bias=True, kernel=None, bias=None, rngs: nnx.Rngs):
    init = nnx.initializers.normal(1.0 / math.sqrt(n_in))
    self.kernel = nnx.Param(init(rngs.params(), (n_in, n_out)) if kernel is None
                            else jnp.full((n_in, n_out), kernel, jnp.float32))
    self.bias = (nnx.Param(jnp.full((n_out,), 0.0 if bias is None else bias, jnp.float32))
                 if use_bias else None)

  def __call__(self, x):
    y = x @ jnp.abs(self.kernel[...])
    return y if self.bias is None else y + self.bias[...]


class LearnedSchedule(nnx.Module):
  """VDM's monotone ``gamma(t)``: a linear part plus a sigmoid network with positive
  weights; starts as the line from ``gamma_min`` to ``gamma_max`` plus a small bend."""

  def __init__(self, gamma_min: float, gamma_max: float, width: int, *, rngs: nnx.Rngs):
    self.l1 = _Monotone(1, 1, kernel=gamma_max - gamma_min, bias=gamma_min, rngs=rngs)
    self.l2 = _Monotone(1, width, rngs=rngs)
    self.l3 = _Monotone(width, 1, use_bias=False, rngs=rngs)
    self.width = width

  def __call__(self, t_B):
    t = t_B[:, None].astype(jnp.float32)
    bend = self.l3(2.0 * (jax.nn.sigmoid(self.l2(2.0 * (t - 0.5))) - 0.5)) / self.width
    return (self.l1(t) + bend)[:, 0]


class Core(nnx.Module):
  """What is trained (and averaged): the U-Net and, if learned, the schedule."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.unet = UNet(cfg["input_shape"], cfg["channels"], cfg["channel_mults"],
                     cfg["num_res_blocks"], cfg["attention_resolutions"], cfg["num_heads"],
                     cfg["num_groups"], cfg["dropout"], cfg["num_classes"],
                     cfg["fourier_features"], dtype=nn.compute_dtype(cfg["dtype"]),
                     rngs=rngs)
    self.schedule_net = (LearnedSchedule(cfg["gamma_min"], cfg["gamma_max"],
                                         cfg["schedule_width"], rngs=rngs)
                         if cfg["schedule"] == "learned" else None)


class Diffusion(nnx.Module):
  """The trained `Core`, its moving average ``ema`` and the static settings."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    for k in ("input_shape", "schedule", "timesteps", "gamma_min", "gamma_max",
              "parameterization", "loss", "num_classes", "label_dropout", "ema_decay",
              "ema_warmup", "sample_steps", "sampler", "guidance"):
      setattr(self, k, cfg[k])
    self.core = Core(cfg, rngs=rngs)
    self.ema = train_lib.ema_copy(self.core)


# ------------------------------------------------------------------- config


_check = check_field  # the shared field check of genjax.models


def _is_int(v, low) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v >= low


def build(config, key: jax.Array) -> Diffusion:
  """Builds a diffusion model from ``config`` (the ``model`` block).

  Args:
    config: ``input_shape=(H, W, C)`` and optionally: the U-Net's ``channels``
      (base width), ``channel_mults`` (one per resolution), ``num_res_blocks``,
      ``attention_resolutions`` (sizes H at which blocks attend), ``num_heads``,
      ``num_groups`` (GroupNorm), ``dropout``; ``schedule`` (``linear``,
      ``cosine``, ``learned``), ``timesteps`` (T; 0 = continuous time),
      ``gamma_min``/``gamma_max`` (the cosine schedule's and the learned one's
      initial end points of -log SNR), ``schedule_width``; ``parameterization``
      (``eps``, ``v``); ``loss`` (``simple``, ``vdm``); ``num_classes`` (0 =
      unconditional) and ``label_dropout``; ``ema_decay`` and ``ema_warmup``;
      sampling defaults ``sample_steps`` (0 = T, or 1,000 in continuous time),
      ``sampler`` and ``guidance``; ``dtype`` (``"float32"`` or ``"bfloat16"``: the
      U-Net's computation; parameters, schedule, loss and bound stay float32);
      ``fourier_features`` (base-2 exponents ``n`` of VDM's input features
      ``sin, cos(2^n 2 pi z)``; ``()`` = none, ``(6, 7)`` for 8-bit data).
    key: PRNG key of the initialisation.

  Raises:
    ValueError: naming the field, for an unknown field or an invalid value.
  """
  cfg = parse_fields(config, _DEFAULTS, {"schedule": SCHEDULES,
                                         "parameterization": PARAMETERIZATIONS,
                                         "loss": LOSSES, "sampler": SAMPLERS,
                                         "dtype": tuple(nn.DTYPES)})
  for name, low in (("channels", 1), ("num_res_blocks", 1), ("num_heads", 1),
                    ("num_groups", 1), ("timesteps", 0), ("num_classes", 0),
                    ("schedule_width", 1), ("sample_steps", 0)):
    _check(_is_int(cfg[name], low), name, f"an int >= {low}", cfg[name])
  mults = tuple(cfg["channel_mults"])
  _check(len(mults) >= 1 and all(_is_int(m, 1) for m in mults), "channel_mults",
         "a non-empty sequence of positive ints", cfg["channel_mults"])
  cfg["channel_mults"] = mults
  cfg["attention_resolutions"] = tuple(int(r) for r in cfg["attention_resolutions"])
  _check(isinstance(cfg["fourier_features"], (tuple, list))
         and all(_is_int(n, 0) and n <= 12 for n in cfg["fourier_features"]),
         "fourier_features", "a sequence of ints in 0..12 (base-2 exponents, e.g. (6, 7))",
         cfg["fourier_features"])
  cfg["fourier_features"] = tuple(cfg["fourier_features"])
  _check(0.0 <= cfg["dropout"] < 1.0, "dropout", "in [0, 1)", cfg["dropout"])
  _check(0.0 <= cfg["label_dropout"] < 1.0, "label_dropout", "in [0, 1)",
         cfg["label_dropout"])
  _check(0.0 <= cfg["ema_decay"] < 1.0, "ema_decay", "in [0, 1)", cfg["ema_decay"])
  _check(cfg["gamma_min"] < cfg["gamma_max"], "gamma_min",
         f"below gamma_max={cfg['gamma_max']}", cfg["gamma_min"])
  _check(cfg["guidance"] >= 0.0, "guidance", ">= 0", cfg["guidance"])
  if cfg["schedule"] == "learned" and cfg["loss"] != "vdm":
    raise ValueError("config.model.schedule='learned' is trained by the bound: set "
                     "config.model.loss='vdm' (the simple loss gives it no gradient)")
  for k in ("dropout", "label_dropout", "ema_decay", "gamma_min", "gamma_max", "guidance"):
    cfg[k] = float(cfg[k])
  cfg["ema_warmup"] = bool(cfg["ema_warmup"])
  return Diffusion(cfg, rngs=nnx.Rngs(params=key))


def check_config(config) -> None:
  """The experiment-level check: diffusion models 8-bit images."""
  if config.data.view != "8bit":
    raise ValueError(f"diffusion models 8-bit images, but config.data.view="
                     f"{config.data.view!r}; set config.data.view='8bit'")


# ---------------------------------------------------------------- the schedule


def gamma(model: Diffusion, t: jax.Array, core: Core | None = None) -> jax.Array:
  """``-log SNR(t)`` of the model's schedule, elementwise over ``t`` in [0, 1]."""
  t = jnp.asarray(t, jnp.float32)
  if model.schedule == "linear":
    s = _LINEAR_T_MIN + (1.0 - _LINEAR_T_MIN) * t
    return jnp.log(jnp.expm1(_LINEAR_B0 * s + 0.5 * (_LINEAR_B1 - _LINEAR_B0) * s * s))
  if model.schedule == "cosine":
    b = math.atan(math.exp(0.5 * model.gamma_min))
    a = math.atan(math.exp(0.5 * model.gamma_max)) - b
    return 2.0 * jnp.log(jnp.tan(a * t + b))
  net = (core if core is not None else model.core).schedule_net
  return net(t.reshape(-1)).reshape(t.shape)


def alpha_sigma(g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(alpha, sigma)`` of ``gamma``: ``sqrt(sigmoid(-gamma))``, ``sqrt(sigmoid(gamma))``."""
  return jnp.sqrt(jax.nn.sigmoid(-g)), jnp.sqrt(jax.nn.sigmoid(g))


def to_unit(x_uint8: jax.Array) -> jax.Array:
  """8-bit values to bin centres in [-1, 1]: ``k -> (2k + 1) / 256 - 1``."""
  return (2.0 * jnp.asarray(x_uint8, jnp.float32) + 1.0) / _LEVELS - 1.0


def from_unit(x: jax.Array) -> jax.Array:
  """The nearest bin: ``[-1, 1] -> uint8`` (the inverse of `to_unit` on bin centres)."""
  return jnp.clip(jnp.floor((x + 1.0) * (_LEVELS / 2)), 0, _LEVELS - 1).astype(jnp.uint8)


def q_sample(model: Diffusion, x_uint8: jax.Array, t_B: jax.Array, key: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
  """A draw ``z_t = alpha_t x + sigma_t eps`` of the forward process, and its ``eps``."""
  x = to_unit(x_uint8)
  alpha, sigma = alpha_sigma(gamma(model, t_B))
  eps = jax.random.normal(key, x.shape)
  return alpha[:, None, None, None] * x + sigma[:, None, None, None] * eps, eps


# ----------------------------------------------------------------- predictions


def _predict_eps(model: Diffusion, core: Core, z, t_B, g_B, labels, key=None):
  """The network's noise prediction ``eps_hat(z_t)`` (from ``v`` if so parameterised)."""
  out = core.unet(z, t_B, labels, key)
  return out if model.parameterization == "eps" else eps_from_v(out, z, g_B)


def eps_from_v(v: jax.Array, z: jax.Array, g_B: jax.Array) -> jax.Array:
  """The noise of ``z = alpha x + sigma eps`` given ``v = alpha eps - sigma x``:
  ``eps = alpha v + sigma z`` (``g_B``: ``gamma`` per example)."""
  alpha, sigma = alpha_sigma(g_B)
  return alpha[:, None, None, None] * v + sigma[:, None, None, None] * z


def _labels(model: Diffusion, batch, key=None):
  """The batch's labels (dropped to the null class with ``label_dropout`` if ``key``)."""
  if not model.num_classes:
    return None
  if "label" not in batch:
    raise ValueError("a class-conditional diffusion model (config.model.num_classes="
                     f"{model.num_classes}) needs batch['label']")
  y = jnp.asarray(batch["label"], jnp.int32)
  if key is None or model.label_dropout == 0.0:
    return y
  drop = jax.random.bernoulli(key, model.label_dropout, y.shape)
  return jnp.where(drop, model.num_classes, y)


def _times(model: Diffusion, key: jax.Array, b: int) -> jax.Array:
  """``b`` training times: low-discrepancy (one uniform offset, spread evenly), on
  the grid ``i / T`` (``i`` in 1..T) in discrete time."""
  t = jnp.mod(jax.random.uniform(key, ()) + jnp.arange(b) / b, 1.0)
  if model.timesteps:
    return (jnp.floor(t * model.timesteps) + 1.0) / model.timesteps
  return t


# -------------------------------------------------------------------- the bound


def _prior_kl(model, core, x):
  """``KL(q(z_1 | x) || N(0, I))`` summed per example (nats)."""
  alpha, sigma = alpha_sigma(gamma(model, jnp.ones(()), core))
  kl = 0.5 * (sigma ** 2 + (alpha * x) ** 2 - jnp.log(sigma ** 2) - 1.0)
  return kl.reshape(x.shape[0], -1).sum(-1)


def decoder_log_probs(model: Diffusion, z0: jax.Array, core: Core | None = None) -> jax.Array:
  """``log p(x = k | z_0)`` for the 256 values: ``[..., 256]`` (a softmax over ``k``)."""
  g0 = gamma(model, jnp.zeros(()), core)
  alpha0, _ = alpha_sigma(g0)
  values = to_unit(jnp.arange(_LEVELS))
  logits = -0.5 * jnp.square((z0[..., None] / alpha0 - values) * jnp.exp(-0.5 * g0))
  return jax.nn.log_softmax(logits, axis=-1)


def _reconstruction(model, core, x_uint8, x, key):
  """``-log p(x | z_0)`` summed per example, one draw of ``z_0 ~ q(z_0 | x)``."""
  alpha0, sigma0 = alpha_sigma(gamma(model, jnp.zeros(()), core))
  z0 = alpha0 * x + sigma0 * jax.random.normal(key, x.shape)
  lp = jnp.take_along_axis(decoder_log_probs(model, z0, core),
                           jnp.asarray(x_uint8, jnp.int32)[..., None], axis=-1)[..., 0]
  return -lp.reshape(x.shape[0], -1).sum(-1)


def _diffusion_term(model, core, x, labels, t_B, key, dropout_key=None):
  """The diffusion loss per example at times ``t_B``: one Monte-Carlo draw (nats)."""
  b = x.shape[0]
  eps = jax.random.normal(key, x.shape)
  if model.timesteps:
    g_t = gamma(model, t_B, core)
    g_s = gamma(model, t_B - 1.0 / model.timesteps, core)
    weight = model.timesteps * jnp.expm1(g_t - g_s)
  else:
    g_t, dg = jax.jvp(lambda t: gamma(model, t, core), (t_B,), (jnp.ones_like(t_B),))
    weight = dg
  alpha, sigma = alpha_sigma(g_t)
  z = alpha[:, None, None, None] * x + sigma[:, None, None, None] * eps
  eps_hat = _predict_eps(model, core, z, t_B, g_t, labels, dropout_key)
  return 0.5 * weight * jnp.square(eps - eps_hat).reshape(b, -1).sum(-1)


def _bound_terms(model, core, batch, key, t_B, labels, dropout_key=None):
  x_uint8 = batch["image"]
  x = to_unit(x_uint8)
  k_rec, k_diff = jax.random.split(key)
  return (_prior_kl(model, core, x), _reconstruction(model, core, x_uint8, x, k_rec),
          _diffusion_term(model, core, x, labels, t_B, k_diff, dropout_key))


def _loss(model: Diffusion, core: Core, batch, key: jax.Array):
  check_image_batch(batch, model.input_shape)
  k_t, k_noise, k_label, k_drop = jax.random.split(key, 4)
  b = batch["image"].shape[0]
  labels = _labels(model, batch, k_label)
  t_B = _times(model, k_t, b)
  if model.loss == "simple":
    x = to_unit(batch["image"])
    eps = jax.random.normal(k_noise, x.shape)
    alpha, sigma = alpha_sigma(gamma(model, t_B, core))
    a4, s4 = alpha[:, None, None, None], sigma[:, None, None, None]
    out = core.unet(a4 * x + s4 * eps, t_B, labels, k_drop)
    target = eps if model.parameterization == "eps" else a4 * eps - s4 * x
    mse = jnp.mean(jnp.square(out - target))
    return mse, {"loss": mse, "mse": mse}
  prior, recon, diff = _bound_terms(model, core, batch, k_noise, t_B, labels, k_drop)
  scale = 1.0 / (math.prod(model.input_shape) * math.log(2.0))
  terms = {"prior_bpd": jnp.mean(prior) * scale, "recon_bpd": jnp.mean(recon) * scale,
           "diffusion_bpd": jnp.mean(diff) * scale}
  total = terms["prior_bpd"] + terms["recon_bpd"] + terms["diffusion_bpd"]
  return total, {"loss": total, "bits_per_dim": total, **terms}


@compiled.model_function
def loss(model: Diffusion, batch, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The training loss on ``batch``, of the trained weights (not the average).

  ``loss="vdm"``: the bound in bits/dim, ``prior + reconstruction + diffusion``
  (one draw of the time per example), with metrics ``bits_per_dim`` and each term
  in bits/dim (``prior_bpd``, ``recon_bpd``, ``diffusion_bpd``).
  ``loss="simple"``: the mean squared error of the prediction (the noise, or
  ``v``) at a uniform time, metric ``mse``. Dropout and label dropout are on.
  """
  return _loss(model, model.core, batch, key)


def update(model: Diffusion, opt: nnx.Optimizer, batch, key: jax.Array) -> dict:
  """A gradient step on `loss`, then the moving average (the ``update`` hook).

  Returns the loss metrics, ``grad_norm``, ``param_norm``, ``update_norm`` and
  the ``ema_decay`` used."""
  value, metrics, norms = train_lib.gradient_step(
      model.core, opt, lambda core: _loss(model, core, batch, key))
  decay = train_lib.ema_decay(model.ema_decay, model.ema_warmup, opt.step[...])
  train_lib.ema_update(model.ema, model.core, decay)
  return {**metrics, "loss": value, **norms, "ema_decay": decay}


def make_optimizer(model: Diffusion, optimizer_config, total_steps: int) -> nnx.Optimizer:
  """The optimizer of the trained `Core` (the moving average is not trained)."""
  return nnx.Optimizer(model.core, train_lib.make_tx(optimizer_config, total_steps),
                       wrt=nnx.Param)


@compiled.model_function(static_argnames=("num_time_samples", "ema"))
def log_likelihood(model: Diffusion, batch, key: jax.Array, num_time_samples: int | None = 1,
                   ema: bool = True) -> jax.Array:
  """The variational lower bound on ``log p(x)`` of the 8-bit images, nats per example.

  ``-(prior + reconstruction + diffusion)``; the diffusion term is averaged over
  ``num_time_samples`` Monte-Carlo draws of the time (each with its own noise),
  an unbiased estimate of the bound; ``None`` sums all ``T`` steps of a
  discrete-time model exactly (one noise draw per step).

  Args:
    model: a `Diffusion` model.
    batch: ``{"image": uint8[B, H, W, C], "label": int32[B]}`` (the label only for
      a class-conditional model: the bound is then on ``log p(x | y)``).
    key: PRNG key.
    num_time_samples: draws of the time (static), or None for the exact sum.
    ema: use the moving average of the weights (default) or the trained ones.

  Returns:
    ``float32[B]``: a lower bound (an estimate of one, for a finite
    ``num_time_samples``) on log p(x) in nats.
  """
  check_image_batch(batch, model.input_shape)
  core = model.ema if ema else model.core
  x = to_unit(batch["image"])
  b = x.shape[0]
  labels = _labels(model, batch)
  k_rec, k_diff = jax.random.split(key)
  prior = _prior_kl(model, core, x)
  recon = _reconstruction(model, core, batch["image"], x, k_rec)
  if num_time_samples is None:
    if not model.timesteps:
      raise ValueError("num_time_samples=None sums the steps of a discrete-time model; "
                       "this one is continuous (config.model.timesteps=0)")
    steps = jnp.arange(1, model.timesteps + 1, dtype=jnp.float32) / model.timesteps

    def one_step(total, i):  # the i-th step's term, T of them summed = the exact bound
      term = _diffusion_term(model, core, x, labels, jnp.full((b,), steps[i]),
                             jax.random.fold_in(k_diff, i))
      return total + term / model.timesteps, None

    diff, _ = jax.lax.scan(one_step, jnp.zeros((b,)), jnp.arange(model.timesteps))
  else:
    if int(num_time_samples) < 1:
      raise ValueError(f"num_time_samples must be >= 1 or None, got {num_time_samples}")

    def one_draw(total, i):
      k = jax.random.fold_in(k_diff, i)
      t_B = jax.random.uniform(jax.random.fold_in(k, 1), (b,))
      if model.timesteps:
        t_B = (jnp.floor(t_B * model.timesteps) + 1.0) / model.timesteps
      return total + _diffusion_term(model, core, x, labels, t_B, k), None

    diff, _ = jax.lax.scan(one_draw, jnp.zeros((b,)), jnp.arange(int(num_time_samples)))
    diff = diff / int(num_time_samples)
  return -(prior + recon + diff)


# ------------------------------------------------------------------- sampling


def _step(sampler: str, z, x_hat, eps_hat, g_t, g_s, eta, key):
  """One step from time t to s < t given the predictions ``x_hat`` and ``eps_hat``."""
  alpha_s, sigma_s = alpha_sigma(g_s)
  alpha_t, _ = alpha_sigma(g_t)
  c = -jnp.expm1(g_s - g_t)  # 1 - SNR(t) / SNR(s)
  noise = jax.random.normal(key, z.shape)
  if sampler == "ancestral":  # q(z_s | z_t, x = x_hat)
    mean = alpha_s / alpha_t * (1.0 - c) * z + alpha_s * c * x_hat
    return mean + jnp.sqrt(sigma_s ** 2 * c) * noise
  var = eta ** 2 * sigma_s ** 2 * c  # DDIM; eta = 1 has the ancestral variance
  return alpha_s * x_hat + jnp.sqrt(jnp.maximum(sigma_s ** 2 - var, 0.0)) * eps_hat + (
      jnp.sqrt(var) * noise)


def sample_latents(eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
                   gamma_fn: Callable[[jax.Array], jax.Array], key: jax.Array,
                   shape: tuple[int, ...], steps: int, sampler: str = "ancestral",
                   eta: float = 0.0, clip: bool = True) -> jax.Array:
  """The reverse process as one ``lax.scan``: ``x_hat(z_0) = z_0 / alpha_0`` in [-1, 1] units.

  Args:
    eps_fn: ``(z [N, ...], t scalar) -> eps_hat [N, ...]``, the noise prediction.
    gamma_fn: ``t -> -log SNR(t)`` (scalar to scalar).
    key: PRNG key of the initial noise ``z_1 ~ N(0, I)`` and the step noise.
    shape: ``[N, ...]`` of the samples.
    steps: number of steps over the grid ``t_i = i / steps`` (static).
    sampler: ``"ancestral"`` (DDPM's: the posterior q(z_s | z_t, x_hat)),
      ``"ddim"`` (``eta`` scales its noise; 0 is deterministic given the initial
      noise) or ``"ode"`` (the probability-flow ODE ``dy = eps_hat d lambda`` in
      ``y = z / alpha``, ``lambda = sigma / alpha``, by classical Runge-Kutta
      over the same grid; DDIM with ``eta = 0`` is its Euler method).
    eta: DDIM's noise scale.
    clip: clip ``x_hat`` to [-1, 1] at each step (ancestral and DDIM).

  Returns:
    ``float32[N, ...]``: ``z_0 / alpha_0``.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
  if int(steps) < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  k0, k_steps = jax.random.split(key)
  z1 = jax.random.normal(k0, shape)

  def predictions(z, t):
    g = gamma_fn(t)
    alpha, sigma = alpha_sigma(g)
    eps_hat = eps_fn(z, t)
    x_hat = (z - sigma * eps_hat) / alpha
    if clip:
      x_hat = jnp.clip(x_hat, -1.0, 1.0)
      eps_hat = (z - alpha * x_hat) / sigma
    return x_hat, eps_hat

  def ode_step(z, t, s):  # RK4 on dy/dt = eps_hat(alpha_t y, t) * dlambda/dt
    def f(tau, y):
      g, dg = jax.jvp(gamma_fn, (tau,), (jnp.ones_like(tau),))
      alpha, _ = alpha_sigma(g)
      return eps_fn(alpha * y, tau) * 0.5 * jnp.exp(0.5 * g) * dg  # lambda = exp(g / 2)
    h = s - t
    y = z / alpha_sigma(gamma_fn(t))[0]
    k1 = f(t, y)
    k2 = f(t + h / 2, y + h / 2 * k1)
    k3 = f(t + h / 2, y + h / 2 * k2)
    k4 = f(s, y + h * k3)
    return (y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)) * alpha_sigma(gamma_fn(s))[0]

  def body(z, i):  # from t = i / steps to s = (i - 1) / steps
    t = i.astype(jnp.float32) / steps
    s = (i - 1).astype(jnp.float32) / steps
    if sampler == "ode":
      return ode_step(z, t, s), None
    x_hat, eps_hat = predictions(z, t)
    return _step(sampler, z, x_hat, eps_hat, gamma_fn(t), gamma_fn(s), eta,
                 jax.random.fold_in(k_steps, i)), None

  z0, _ = jax.lax.scan(body, z1, jnp.arange(int(steps), 0, -1))
  return z0 / alpha_sigma(gamma_fn(jnp.zeros(())))[0]


def _check_sample(model, key, num, steps, sampler, eta, guidance, labels, ema, clip):
  del model, key, ema, clip
  if sampler is not None and sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
  if steps is not None and (not _is_int(steps, 1)):
    raise ValueError(f"steps must be an int >= 1 (or None for the model's default); "
                     f"got {steps!r}")
  if not 0.0 <= float(eta) <= 1.0:
    raise ValueError(f"eta must be in [0, 1]; got {eta}")
  if guidance is not None and float(guidance) < 0:
    raise ValueError(f"guidance must be >= 0; got {guidance}")
  if labels is not None and len(labels) != num:
    raise ValueError(f"labels has {len(labels)} entries for num={num} samples")


@compiled.model_function(static_argnames=("num", "steps", "sampler", "ema", "clip"),
                         check=_check_sample)
def sample(model: Diffusion, key: jax.Array, num: int, steps: int | None = None,
           sampler: str | None = None, eta: float = 0.0, guidance: float | None = None,
           labels: jax.Array | None = None, ema: bool = True, clip: bool = True
           ) -> jax.Array:
  """Draws ``num`` images by running the reverse process, one ``lax.scan`` over the steps.

  Args:
    model: a `Diffusion` model.
    key: PRNG key.
    num: number of images (static).
    steps: reverse steps (static); default ``config.model.sample_steps``, or T
      (1,000 in continuous time) when that is 0.
    sampler: ``"ancestral"``, ``"ddim"`` or ``"ode"`` (see `sample_latents`);
      default ``config.model.sampler``.
    eta: DDIM's noise scale (0: deterministic given the initial noise).
    guidance: classifier-free guidance scale ``w`` (class-conditional models;
      default ``config.model.guidance``): ``eps = (1 + w) eps(z, y) - w eps(z, null)``.
    labels: ``int32[num]`` classes (default ``arange(num) % num_classes``).
    ema: use the moving average of the weights (default).
    clip: clip the predicted image to [-1, 1] at every step.

  Returns:
    ``uint8[num, H, W, C]`` in 0..255: the mode of the decoder ``p(x | z_0)``.
  """
  core = model.ema if ema else model.core
  steps = int(steps or model.sample_steps or model.timesteps or 1000)
  sampler = sampler or model.sampler
  w = model.guidance if guidance is None else guidance
  y = None
  if model.num_classes:
    y = (jnp.arange(num) % model.num_classes if labels is None
         else jnp.asarray(labels, jnp.int32))

  def eps_fn(z, t):
    t_N = jnp.full((z.shape[0],), t)
    g_N = gamma(model, t_N, core)
    if y is None:
      return _predict_eps(model, core, z, t_N, g_N, None)
    if guidance is None and model.guidance == 0.0:  # no unconditional pass needed
      return _predict_eps(model, core, z, t_N, g_N, y)
    both = _predict_eps(model, core, jnp.concatenate([z, z]), jnp.concatenate([t_N, t_N]),
                        jnp.concatenate([g_N, g_N]),
                        jnp.concatenate([y, jnp.full_like(y, model.num_classes)]))
    cond, uncond = both[:num], both[num:]
    return (1.0 + w) * cond - w * uncond

  x = sample_latents(eps_fn, lambda t: gamma(model, t, core), key,
                     (num, *model.input_shape), steps, sampler, eta, clip)
  return from_unit(x)
