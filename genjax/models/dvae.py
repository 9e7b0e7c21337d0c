"""Discrete image tokenizers: a dVAE (Gumbel-softmax) or a VQ-VAE (EMA codebook).

Stage 1 of DALL-E: an image becomes a grid of tokens from a codebook of ``K``
entries, ``H/4 x W/4`` of them after two stride-2 stages (MNIST: 28x28 -> 7x7).

* ``quantizer="gumbel"`` (Ramesh et al. 2021): the encoder gives logits over the
  ``K`` codes at each position, ``q(z|x)``; training decodes the relaxed one-hot
  ``softmax((logits + g) / tau)`` (Gumbel-softmax, Jang et al. 2017; Maddison et al.
  2017) times a learned codebook, with ``tau`` annealed from
  ``temperature_start`` to ``temperature_end`` over ``anneal_steps`` (exponentially,
  as DALL-E), and minimises ``-log p(x|z) + kl_weight * KL(q || uniform)``. The ELBO
  with a hard one-hot draw is a lower bound on log p(x) under the uniform prior.
* ``quantizer="vq"`` (van den Oord et al. 2017): the encoder gives vectors, each
  replaced by its nearest code with a straight-through gradient and a commitment
  loss; the codebook is not a parameter but an exponential moving average of the
  vectors assigned to each code (Razavi et al. 2019, appendix), and a code used by
  less than ``dead_threshold`` of a batch on average (EMA count) is re-initialised
  to a random encoder output of the batch (Dhariwal et al. 2020, Jukebox).

Likelihood ``p(x|z)``: Bernoulli on binarized images or a discretized logistic per
sub-pixel on 8-bit images, as the VAE. Tokens: `encode` (argmax or nearest code)
and `decode` (the median image of a token grid) are what DALL-E uses.

``dtype="bfloat16"`` computes the encoder's and decoder's convolutions in bfloat16;
parameters, the codebook, the code distances, the KL, the likelihood and the loss
stay float32 (the encoder's and decoder's outputs are promoted).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from genjax import compiled
from genjax import distributions as dist
from genjax import nn
from genjax.models import check_image_batch
from genjax.models import parse_fields

LIKELIHOOD = "lower bound (ELBO, one hard draw of the codes; uniform prior)"
QUANTIZERS = ("gumbel", "vq")
LIKELIHOODS = ("bernoulli", "discretized_logistic")
_DEFAULTS = dict(name="dvae", input_shape=None, quantizer="gumbel", codebook_size=512,
                 code_dim=64, channels=(32, 64), likelihood="discretized_logistic",
                 kl_weight=1.0, temperature_start=1.0, temperature_end=1.0 / 16,
                 anneal_steps=5000, commitment=0.25, ema_decay=0.99, dead_threshold=0.01,
                 dtype="float32")
_CHOICES = dict(quantizer=QUANTIZERS, likelihood=LIKELIHOODS, dtype=tuple(nn.DTYPES))


class Codebook(nnx.Variable):
  """VQ codebook state updated by moving averages, not by the optimizer."""


class DVAE(nnx.Module):
  """Convolutional encoder to a token grid, codebook, decoder back to pixels."""

  def __init__(self, input_shape, quantizer, codebook_size, code_dim, channels, likelihood,
               kl_weight, temperature_start, temperature_end, anneal_steps, commitment,
               ema_decay, dead_threshold, dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape, self.quantizer, self.likelihood = tuple(input_shape), quantizer, likelihood
    self.codebook_size, self.code_dim = codebook_size, code_dim
    self.kl_weight, self.commitment = float(kl_weight), float(commitment)
    self.temperature_start, self.temperature_end = float(temperature_start), float(temperature_end)
    self.anneal_steps, self.ema_decay = int(anneal_steps), float(ema_decay)
    self.dead_threshold = float(dead_threshold)
    self.dtype = dt = nn.compute_dtype(dtype)
    c = self.input_shape[-1]
    ins = (channels[0],) + tuple(channels[:-1])
    self.stem = nn.conv(c, channels[0], dtype=dt, rngs=rngs)
    self.down = nnx.List([nn.Downsample(i, o, dtype=dt, rngs=rngs)
                          for i, o in zip(ins, channels)])
    self.enc_res = nnx.List([nn.ResBlock(o, dtype=dt, rngs=rngs) for o in channels])
    head = codebook_size if quantizer == "gumbel" else code_dim
    self.enc_out = nn.conv(channels[-1], head, 1, dtype=dt, rngs=rngs)
    init = jax.random.normal(rngs.params(), (codebook_size, code_dim))
    if quantizer == "gumbel":
      self.codebook = nnx.Param(init)
    else:
      self.codebook = Codebook(init)
      self.ema_count = Codebook(jnp.ones((codebook_size,)))
      self.ema_sum = Codebook(init)
    self.dec_in = nn.conv(code_dim, channels[-1], 1, dtype=dt, rngs=rngs)
    self.dec_res = nnx.List([nn.ResBlock(o, dtype=dt, rngs=rngs) for o in reversed(channels)])
    self.up = nnx.List([nn.Upsample(o, i, dtype=dt, rngs=rngs)
                        for o, i in zip(reversed(channels), reversed(ins))])
    self.dec_out = nn.conv(channels[0], c if likelihood == "bernoulli" else 2 * c,
                           dtype=dt, rngs=rngs)

  @property
  def grid_shape(self) -> tuple[int, int]:
    h, w, _ = self.input_shape
    n = len(self.down)
    return nn.downsampled_size(h, n), nn.downsampled_size(w, n)

  def encoder(self, x_BxHxWxC):
    """Logits ``[B, h, w, K]`` (gumbel) or vectors ``[B, h, w, D]`` (vq)."""
    top = 1.0 if self.likelihood == "bernoulli" else 255.0
    h = self.stem(nn.to_compute(jnp.asarray(x_BxHxWxC, jnp.float32) * (2.0 / top) - 1.0,
                                self.dtype))
    for down, res in zip(self.down, self.enc_res):
      h = res(jax.nn.relu(down(h)))
    return nn.at_least_float32(self.enc_out(jax.nn.relu(h)))

  def decoder(self, z_Bxhxwxd):
    """Decoder outputs: logits ``[B, H, W, C]`` or logistic means and log-scales."""
    h = self.dec_in(nn.to_compute(z_Bxhxwxd, self.dtype))
    for res, up in zip(self.dec_res, self.up):
      h = up(jax.nn.relu(res(h)))
    out = nn.at_least_float32(nn.crop(self.dec_out(jax.nn.relu(h)), *self.input_shape[:2]))
    if self.likelihood == "bernoulli":
      return {"logits": out}
    c = self.input_shape[-1]
    return {"means": out[..., :c], "log_scales": out[..., c:]}


def _log_px(model: DVAE, x, params) -> jax.Array:
  """``log p(x|z)`` summed over sub-pixels, ``[B]``."""
  if model.likelihood == "bernoulli":
    lp = dist.bernoulli_log_prob(params["logits"], x)
  else:
    m, s = params["means"], params["log_scales"]
    lp = dist.discretized_logistic_mixture_log_prob(x, jnp.zeros(m.shape + (1,)),
                                                    m[..., None], s[..., None])
  return lp.reshape(lp.shape[0], -1).sum(-1)


def _median(model: DVAE, params) -> jax.Array:
  if model.likelihood == "bernoulli":
    return (params["logits"] > 0).astype(jnp.uint8)
  return jnp.clip(jnp.round((params["means"] + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def temperature(model: DVAE, step) -> jax.Array:
  """The Gumbel-softmax temperature after ``step`` updates (exponential anneal)."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(model.anneal_steps, 1), 0.0, 1.0)
  return model.temperature_start * (model.temperature_end / model.temperature_start) ** frac


def _nearest(model: DVAE, z_Bxhxwxd):
  """Indices of the nearest codes and their squared distances."""
  book = jnp.asarray(model.codebook[...])
  d2 = (jnp.sum(z_Bxhxwxd ** 2, -1, keepdims=True) - 2 * z_Bxhxwxd @ book.T
        + jnp.sum(book ** 2, -1))
  return jnp.argmin(d2, -1)


def _terms(model: DVAE, batch, key, tau=None):
  """Reconstruction, KL (or commitment) and code indices of one draw."""
  check_image_batch(batch, model.input_shape)
  x = batch["image"]
  out = model.encoder(x)
  hw = math.prod(model.grid_shape)
  if model.quantizer == "gumbel":
    g = jax.random.gumbel(key, out.shape)
    codes = jnp.argmax(out + g, -1)
    y = (jax.nn.one_hot(codes, model.codebook_size) if tau is None
         else jax.nn.softmax((out + g) / tau, -1))  # hard draw (bound) or relaxed (training)
    z = y @ model.codebook[...]
    logq = jax.nn.log_softmax(out, -1)
    kl = jnp.sum(jnp.exp(logq) * (logq + math.log(model.codebook_size)), (1, 2, 3))
    extra = kl
  else:
    codes = _nearest(model, out)
    e = jnp.asarray(model.codebook[...])[codes]
    z = out + jax.lax.stop_gradient(e - out)  # straight-through
    extra = jnp.sum((out - jax.lax.stop_gradient(e)) ** 2, (1, 2, 3))  # commitment
    kl = jnp.full((x.shape[0],), hw * math.log(model.codebook_size))
  recon = -_log_px(model, x, model.decoder(z))
  return recon, kl, extra, codes, out


def _usage(model: DVAE, codes) -> dict[str, jax.Array]:
  freq = jnp.bincount(codes.reshape(-1), length=model.codebook_size) / codes.size
  entropy = -jnp.sum(jnp.where(freq > 0, freq * jnp.log(jnp.maximum(freq, 1e-12)), 0.0))
  return {"perplexity": jnp.exp(entropy), "usage": jnp.mean(freq > 0)}


@compiled.model_function
def loss(model: DVAE, batch, key, tau=None):
  """Training loss per example (relaxed draw at temperature ``tau`` for gumbel).

  Returns:
    ``(loss, metrics)``; metrics ``recon``, ``kl`` (gumbel) or ``commitment`` (vq),
    ``elbo`` (nats), ``bits_per_dim``, batch code ``perplexity`` and ``usage``.
  """
  tau = model.temperature_end if tau is None else tau
  recon, kl, extra, codes, _ = _terms(model, batch, key, tau if model.quantizer == "gumbel"
                                       else None)
  if model.quantizer == "gumbel":
    total = jnp.mean(recon + model.kl_weight * kl)
    metrics = {"kl": jnp.mean(kl)}
  else:
    total = jnp.mean(recon + model.commitment * extra)
    metrics = {"commitment": jnp.mean(extra)}
  elbo = -jnp.mean(recon + kl)
  dims = math.prod(model.input_shape)
  return total, {"loss": total, "recon": jnp.mean(recon), "elbo": elbo,
                 "bits_per_dim": -elbo / (dims * math.log(2.0)), **metrics,
                 **_usage(model, codes)}


def update(model: DVAE, opt, batch, key):
  """One training update: a gradient step (gumbel: at the annealed temperature of
  ``opt.step``), then for vq the EMA codebook update and dead-code restarts."""
  from genjax import train  # pylint: disable=g-import-not-at-top
  tau = temperature(model, opt.step[...])
  lossv, metrics, norms = train.gradient_step(model, opt, lambda m: loss(m, batch, key, tau))
  out = {**metrics, "loss": lossv, **norms}
  if model.quantizer == "gumbel":
    return {**out, "temperature": tau}
  z = model.encoder(batch["image"])
  ema_update(model, z, _nearest(model, z), jax.random.fold_in(key, 1))
  return {**out, "live_codes": jnp.mean(model.ema_count[...] >= model.dead_threshold)}


def ema_update(model: DVAE, z_Bxhxwxd, codes_Bxhxw, key) -> None:
  """The VQ codebook as moving averages of its assigned vectors; dead codes restart.

  ``count_k <- d count_k + (1 - d) n_k`` and ``sum_k <- d sum_k + (1 - d) s_k`` for the
  ``n_k`` vectors of the batch assigned to code ``k`` (their sum ``s_k``), then
  ``code_k = sum_k / count_k`` (counts Laplace-smoothed); codes whose count falls
  below ``dead_threshold`` take a random vector of the batch (and count 1).
  """
  z = jax.lax.stop_gradient(z_Bxhxwxd).reshape(-1, model.code_dim)
  onehot = jax.nn.one_hot(codes_Bxhxw.reshape(-1), model.codebook_size)
  d = model.ema_decay
  count = d * model.ema_count[...] + (1 - d) * onehot.sum(0)
  total = d * model.ema_sum[...] + (1 - d) * onehot.T @ z
  n = count.sum()
  smoothed = (count + 1e-5) / (n + model.codebook_size * 1e-5) * n
  book = total / smoothed[:, None]
  dead = count < model.dead_threshold
  pick = jax.random.randint(key, (model.codebook_size,), 0, z.shape[0])
  model.codebook.set_value(jnp.where(dead[:, None], z[pick], book))
  model.ema_sum.set_value(jnp.where(dead[:, None], z[pick], total))
  model.ema_count.set_value(jnp.where(dead, 1.0, count))


@compiled.model_function
def log_likelihood(model: DVAE, batch, key) -> jax.Array:
  """The ELBO of one hard draw of the codes, a lower bound on log p(x), nats ``[B]``."""
  recon, kl, _, _, _ = _terms(model, batch, key)
  return -(recon + kl)


@compiled.model_function
def eval_metrics(model: DVAE, batch, key):
  """Per example: ``recon`` (nats), ``mse`` (per sub-pixel, 0..255 scale of the
  median reconstruction) and ``code_counts`` ``[B, K]`` (their sum over the test set
  gives the codebook perplexity and usage, `eval_summary`)."""
  recon, _, _, codes, _ = _terms(model, batch, key)
  x = jnp.asarray(batch["image"], jnp.float32)
  scale = 255.0 if model.likelihood == "discretized_logistic" else 1.0
  rec = decode.eager(model, encode.eager(model, batch["image"])).astype(jnp.float32)
  mse = jnp.mean(((rec - x) * (255.0 / scale)) ** 2, (1, 2, 3))
  counts = jax.nn.one_hot(codes.reshape(codes.shape[0], -1), model.codebook_size).sum(1)
  return {"recon": recon, "mse": mse, "code_counts": counts}


def eval_summary(totals: dict) -> dict:
  """Codebook perplexity and usage over the whole evaluation, from summed counts."""
  counts = totals.pop("code_counts")
  freq = counts / max(counts.sum(), 1.0)
  nz = freq[freq > 0]
  return {"codebook_perplexity": float(math.exp(-(nz * jnp.log(nz)).sum())),
          "codebook_usage": float((counts > 0).mean())}


@compiled.model_function
def encode(model: DVAE, x_BxHxWxC) -> jax.Array:
  """Token grids ``int32[B, h, w]``: the most likely code (gumbel) or the nearest (vq)."""
  out = model.encoder(x_BxHxWxC)
  codes = jnp.argmax(out, -1) if model.quantizer == "gumbel" else _nearest(model, out)
  return codes.astype(jnp.int32)


@compiled.model_function
def decode(model: DVAE, tokens_Bxhxw) -> jax.Array:
  """The median image ``uint8[B, H, W, C]`` of token grids."""
  z = jnp.asarray(model.codebook[...])[tokens_Bxhxw]
  return _median(model, model.decoder(z))


@compiled.model_function(static_argnames=("num",))
def sample(model: DVAE, key, num: int) -> jax.Array:
  """Images of uniformly random token grids (the prior of the bound; DALL-E's
  transformer is the learned prior)."""
  tokens = jax.random.randint(key, (num, *model.grid_shape), 0, model.codebook_size)
  return decode.eager(model, tokens)


@compiled.model_function
def visualizations(model: DVAE, key, batch):
  """``reconstructions``: up to 8 test images interleaved with their token decodes."""
  del key
  x = batch["image"][:8]
  rec = decode.eager(model, encode.eager(model, x))
  return {"reconstructions": jnp.stack([x, rec], 1).reshape(-1, *x.shape[1:])}


def check_config(config) -> None:
  want = {"bernoulli": "binarized", "discretized_logistic": "8bit"}[
      config.model.get("likelihood") or _DEFAULTS["likelihood"]]
  if config.data.view != want:
    raise ValueError(f"config.model.likelihood needs config.data.view={want!r}, got "
                     f"{config.data.view!r}")


def build(config, key: jax.Array) -> DVAE:
  """Builds the tokenizer from ``config`` (the ``model`` block).

  Args:
    config: ``input_shape`` and the fields of the module docstring; ``channels``
      gives one stride-2 stage per width (two: ``H/4 x W/4`` tokens).
    key: PRNG key of the initialisation.

  Returns:
    The `DVAE`; ``grid_shape`` is its token grid.

  References:
    Ramesh et al., "Zero-Shot Text-to-Image Generation", ICML 2021 (the dVAE).
    van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation
    Learning", NeurIPS 2017 (VQ-VAE).
  """
  cfg = parse_fields(config, _DEFAULTS, _CHOICES)
  del cfg["name"]
  for name in ("codebook_size", "code_dim", "anneal_steps"):
    if not isinstance(cfg[name], int) or cfg[name] < 1:
      raise ValueError(f"config.model.{name} must be an int >= 1, got {cfg[name]!r}")
  if not 0 < cfg["temperature_end"] <= cfg["temperature_start"]:
    raise ValueError("config.model.temperature_end must be in (0, temperature_start]")
  if not 0 < cfg["ema_decay"] < 1:
    raise ValueError(f"config.model.ema_decay must be in (0, 1), got {cfg['ema_decay']!r}")
  cfg["channels"] = tuple(int(c) for c in cfg["channels"])
  return DVAE(**cfg, rngs=nnx.Rngs(params=key))

