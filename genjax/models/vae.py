"""Variational autoencoder (Kingma & Welling 2014), MLP or convolutional, beta-VAE.

q(z|x) = N(mean(x), diag(exp(log_var(x)))), p(z) = N(0, I), and p(x|z) is either
Bernoulli on binarized images (``likelihood="bernoulli"``, pixels 0/1) or a single
discretized logistic per sub-pixel on 8-bit images (``"discretized_logistic"``,
pixels 0..255, as in PixelCNN++ with K = 1). Training minimises
``-E_q log p(x|z) + beta KL(q || p)`` with one reparameterised sample; the
log-likelihood is the importance-weighted bound of Burda et al. (2016).

Randomness convention: the i-th posterior sample of a call with key ``key`` uses
``eps_i = jax.random.normal(jax.random.fold_in(key, i), [B, latent_dim])``, so
`loss`, `eval_metrics` and ``log_likelihood(num_samples=1)`` draw the same ``z``
for the same key, and the IWAE bound does not depend on ``chunk_size``.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from flax import nnx

from genjax import compiled
from genjax import distributions as dist
from genjax import nn
from genjax.models import check_image_batch

LIKELIHOOD = "lower bound (IWAE, num_samples importance samples; num_samples=1 is the ELBO)"
LIKELIHOODS = ("bernoulli", "discretized_logistic")
ARCHITECTURES = ("mlp", "conv")
_DEFAULTS = dict(name="vae", input_shape=None, likelihood="bernoulli", latent_dim=50,
                 architecture="mlp", hidden=(512, 512), channels=(32, 64), beta=1.0,
                 activation="silu", dtype="float32")
_DECODES_PER_CHUNK = {"mlp": 4096, "conv": 512}  # default IWAE chunk: decoded images


class VAE(nnx.Module):
  """Encoder q(z|x) and decoder p(x|z); see `build` for the fields."""

  def __init__(self, input_shape, likelihood, latent_dim, architecture, hidden,
               channels, beta, activation, dtype="float32", *, rngs: nnx.Rngs):
    self.input_shape = tuple(input_shape)
    # the computation's dtype; None (float32) leaves it to the inputs and parameters
    # (float64 under jax_enable_x64 in the gradient checks)
    self.dtype = nn.compute_dtype(dtype)
    self.likelihood = likelihood
    self.latent_dim = latent_dim
    self.architecture = architecture
    self.beta = beta
    h, w, c = self.input_shape
    out_c = c if likelihood == "bernoulli" else 2 * c  # logits | (means, log_scales)
    if architecture == "mlp":
      self.encoder = nn.MLP(h * w * c, (*hidden, 2 * latent_dim), activation=activation,
                            dtype=self.dtype, rngs=rngs)
      self.decoder = nn.MLP(latent_dim, (*reversed(hidden), h * w * out_c),
                            activation=activation, dtype=self.dtype, rngs=rngs)
    else:
      self.encoder = nn.ConvEncoder(self.input_shape, channels, 2 * latent_dim,
                                    activation=activation, dtype=self.dtype, rngs=rngs)
      self.decoder = nn.ConvDecoder(latent_dim, (h, w, out_c), channels,
                                    activation=activation, dtype=self.dtype, rngs=rngs)


def _field(config, name):  # a ConfigDict or a dict
  return _DEFAULTS[name] if config.get(name) is None else config.get(name)


def _invalid(name, want, value) -> ValueError:
  return ValueError(f"config.model.{name} must be {want}; got {value!r}")


def _positive_ints(name, value, allow_empty=False):
  try:
    out = tuple(int(v) for v in value)
    ok = all(o > 0 and o == v for o, v in zip(out, value)) and (allow_empty or out)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise _invalid(name, "a sequence of positive ints", value)
  return out


def build(config, key: jax.Array) -> VAE:
  """Builds a VAE from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ml_collections.ConfigDict`` (or dict) with ``input_shape=(H, W, C)``
      and optionally ``likelihood`` (``"bernoulli"`` for 0/1 images,
      ``"discretized_logistic"`` for 0..255 images), ``latent_dim``,
      ``architecture`` (``"mlp"`` or ``"conv"``), ``hidden`` (MLP widths),
      ``channels`` (conv widths, one stride-2 stage each), ``beta`` (KL weight),
      ``activation`` (a name of ``genjax.nn.ACTIVATIONS``) and ``dtype``
      (``"float32"`` or ``"bfloat16"``: the encoder's and decoder's computation;
      parameters, the posterior's parameters, the likelihood and the loss stay
      float32).
    key: PRNG key of the initialisation.

  Returns:
    The `VAE` module; ``input_shape``, ``likelihood``, ``latent_dim`` and ``beta``
    are static attributes.

  Raises:
    ValueError: naming the field and its allowed values, for an unknown field or
      an invalid value.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    Higgins et al., "beta-VAE", ICLR 2017 (the ``beta`` weight).
  """
  unknown = sorted(set(config.keys()) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown field(s) {', '.join('config.model.' + k for k in unknown)} "
                     f"for the vae; known fields: {', '.join(_DEFAULTS)}")
  if _field(config, "name") != "vae":
    raise ValueError(f"config.model.name is {_field(config, 'name')!r}, expected 'vae'")
  shape = _field(config, "input_shape")
  if shape is None or len(shape) != 3:
    raise _invalid("input_shape", "(H, W, C) with 3 positive ints", shape)
  shape = _positive_ints("input_shape", shape)
  options = {"likelihood": LIKELIHOODS, "architecture": ARCHITECTURES,
             "activation": tuple(nn.ACTIVATIONS), "dtype": tuple(nn.DTYPES)}
  for name, allowed in options.items():
    if _field(config, name) not in allowed:
      raise _invalid(name, f"one of {', '.join(map(repr, allowed))}", _field(config, name))
  latent_dim, beta = _field(config, "latent_dim"), _field(config, "beta")
  if not isinstance(latent_dim, numbers.Integral) or isinstance(latent_dim, bool) or (
      latent_dim < 1):
    raise _invalid("latent_dim", "an int >= 1", latent_dim)
  if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not beta >= 0:
    raise _invalid("beta", "a number >= 0", beta)
  arch = _field(config, "architecture")
  hidden = _positive_ints("hidden", _field(config, "hidden"), allow_empty=True)
  channels = _positive_ints("channels", _field(config, "channels"),
                            allow_empty=arch == "mlp")
  return VAE(shape, _field(config, "likelihood"), int(latent_dim), arch, hidden, channels,
             float(beta), _field(config, "activation"), _field(config, "dtype"),
             rngs=nnx.Rngs(params=key))


def check_config(config) -> None:
  """The experiment-level check: the likelihood must fit the data view."""
  want = {"bernoulli": "binarized", "discretized_logistic": "8bit"}
  likelihood = _field(config.model, "likelihood")
  if likelihood in want and config.data.view != want[likelihood]:
    raise ValueError(
        f"config.model.likelihood={likelihood!r} models {want[likelihood]} images, but "
        f"config.data.view={config.data.view!r}; set config.data.view="
        f"{want[likelihood]!r} or change the likelihood")


def encode(model: VAE, x_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The approximate posterior q(z|x) = N(mean, diag(exp(log_var))).

  Args:
    model: a `VAE`.
    x_BxHxWxC: images in data space (uint8 0/1 or 0..255), mapped to [-1, 1].

  Returns:
    ``(mean_BxL, log_var_BxL)``.
  """
  top = 1.0 if model.likelihood == "bernoulli" else 255.0
  x_BxHxWxC = jnp.asarray(x_BxHxWxC, jnp.float32) * (2.0 / top) - 1.0
  if model.architecture == "mlp":
    x_BxHxWxC = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
  out_Bx2L = nn.at_least_float32(model.encoder(nn.to_compute(x_BxHxWxC, model.dtype)))
  return out_Bx2L[:, :model.latent_dim], out_Bx2L[:, model.latent_dim:]


def decode(model: VAE, z_BxL: jax.Array) -> dict[str, jax.Array]:
  """The parameters of the decoder p(x|z).

  Args:
    model: a `VAE`.
    z_BxL: latent codes.

  Returns:
    ``{"logits": [B, H, W, C]}`` for the Bernoulli likelihood, or
    ``{"means", "log_scales"}`` (each ``[B, H, W, C]``, in the [-1, 1] units of
    `genjax.distributions.discretized_logistic_mixture_log_prob`) for the
    discretized logistic (Salimans et al., "PixelCNN++", ICLR 2017).
  """
  out_BxHxWxP = nn.at_least_float32(model.decoder(nn.to_compute(z_BxL, model.dtype)))
  out_BxHxWxP = out_BxHxWxP.reshape(z_BxL.shape[0], *model.input_shape[:2], -1)
  if model.likelihood == "bernoulli":
    return {"logits": out_BxHxWxP}
  c = model.input_shape[-1]
  return {"means": out_BxHxWxP[..., :c], "log_scales": out_BxHxWxP[..., c:]}


def _log_px(model: VAE, x_BxHxWxC: jax.Array, params: dict) -> jax.Array:
  """log p(x|z) summed over pixels; leading axes of ``params`` broadcast over x."""
  if model.likelihood == "bernoulli":
    lp = dist.bernoulli_log_prob(params["logits"], x_BxHxWxC)
  else:
    means, log_scales = params["means"], params["log_scales"]
    lp = dist.discretized_logistic_mixture_log_prob(
        x_BxHxWxC, jnp.zeros(means.shape + (1,), means.dtype), means[..., None],
        log_scales[..., None])
  return lp.reshape(*lp.shape[:-3], -1).sum(-1)


def _draw(model: VAE, key: jax.Array, params: dict, mean: bool) -> jax.Array:
  """A draw from p(x|z), or its median if ``mean``, as uint8 in data space."""
  if model.likelihood == "bernoulli":
    logits = params["logits"]
    x = logits > 0 if mean else jax.random.bernoulli(  # a flat draw compiles faster
        key, jax.nn.sigmoid(logits).reshape(-1)).reshape(logits.shape)
    return x.astype(jnp.uint8)
  m, s = params["means"], params["log_scales"]
  if mean:  # the median of a discretized logistic: the bin holding its location
    return jnp.clip(jnp.round((m + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
  return dist.discretized_logistic_mixture_sample(
      key, jnp.zeros_like(m)[..., None], m[..., None], s[..., None]).astype(jnp.uint8)


def _noise(key: jax.Array, start, count: int, like: jax.Array) -> jax.Array:
  """``[count, *like.shape]`` normals for the samples start .. start + count - 1."""
  def draw(i):  # a flat draw: the same numbers as a shaped one, faster to compile
    return jax.random.normal(jax.random.fold_in(key, i), (like.size,), like.dtype)

  return jax.vmap(draw)(start + jnp.arange(count)).reshape(count, *like.shape)


def _encode_sample(model: VAE, batch, key):  # mean, log_var, z ~ q(z|x) (sample 0)
  check_image_batch(batch, model.input_shape)
  mean, log_var = encode(model, batch["image"])
  return mean, log_var, mean + jnp.exp(0.5 * log_var) * _noise(key, 0, 1, mean)[0]


def _elbo_terms(model: VAE, batch, key):  # -log p(x|z), KL: float[B] each
  mean, log_var, z = _encode_sample(model, batch, key)
  return (-_log_px(model, batch["image"], decode(model, z)),
          dist.gaussian_kl_standard_normal(mean, log_var).sum(-1))


@compiled.model_function
def loss(model: VAE, batch, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The negative (beta-weighted) ELBO per example, averaged over the batch.

  ``recon + beta * kl`` with ``recon = -log p(x|z)`` at one reparameterised sample
  ``z = mean + exp(log_var / 2) * eps`` and the analytic ``kl = KL(q(z|x) || N(0, I))``.

  Args:
    model: a `VAE`.
    batch: ``{"image": uint8[B, H, W, C], ...}`` in data space.
    key: PRNG key of the posterior sample.

  Returns:
    ``(loss, metrics)``; metrics hold ``loss``, ``elbo`` (beta = 1, nats/example),
    ``recon``, ``kl`` and ``bits_per_dim`` (of ``-elbo``).

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (eq. 10).
    Higgins et al., "beta-VAE", ICLR 2017.
  """
  recon_B, kl_B = _elbo_terms(model, batch, key)
  total = jnp.mean(recon_B + model.beta * kl_B)
  elbo = -jnp.mean(recon_B + kl_B)
  dims = math.prod(model.input_shape)
  return total, {"loss": total, "elbo": elbo, "recon": jnp.mean(recon_B),
                 "kl": jnp.mean(kl_B), "bits_per_dim": -elbo / (dims * math.log(2.0))}


@compiled.model_function
def eval_metrics(model: VAE, batch, key: jax.Array) -> dict[str, jax.Array]:
  """Per-example ``{"elbo", "recon", "kl"}``: float32[B] in nats, beta = 1.

  The same posterior sample as `loss` for the same key; for ``experiments.evaluate``."""
  recon_B, kl_B = _elbo_terms(model, batch, key)
  return {"elbo": -(recon_B + kl_B), "recon": recon_B, "kl": kl_B}


@compiled.model_function(static_argnames=("num_samples", "chunk_size"))
def log_likelihood(model: VAE, batch, key: jax.Array, num_samples: int = 1,
                   chunk_size: int | None = None) -> jax.Array:
  """The importance-weighted lower bound on log p(x), in nats per example.

  ``log (1/k) sum_i p(x, z_i) / q(z_i|x)``, ``z_i ~ q(z|x)``, ``k = num_samples``;
  ``k = 1`` is the single-sample ELBO estimator (Monte-Carlo KL), and the bound
  tightens as ``k`` grows. The encoder runs once; the samples are decoded
  ``chunk_size`` at a time in a ``lax.scan`` keeping a running logsumexp. When
  ``chunk_size`` does not divide ``k``, the last chunk is padded with masked-out
  samples (at most ``chunk_size - 1`` wasted decodes). Sample ``i`` has the same
  noise for every ``chunk_size``, so the result does not depend on it.

  Args:
    model: a `VAE`.
    batch: ``{"image": uint8[B, H, W, C], ...}``.
    key: PRNG key of the importance samples.
    num_samples: ``k`` (static).
    chunk_size: samples decoded at once (static); default ``min(k, N // B)`` with
      N = 4096 decoded images for the MLP and 512 for the conv architecture.

  Returns:
    ``float32[B]`` lower bounds on log p(x).

  References:
    Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016.
  """
  check_image_batch(batch, model.input_shape)
  x = batch["image"]
  k = int(num_samples)
  if k < 1:
    raise ValueError(f"num_samples must be >= 1, got {num_samples}")
  if chunk_size is not None and int(chunk_size) < 1:
    raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
  b = x.shape[0]
  chunk = min(int(chunk_size or max(1, _DECODES_PER_CHUNK[model.architecture] // b)), k)
  mean, log_var = encode(model, x)

  def body(lse_B, start):  # the samples start .. start + chunk - 1
    eps_SxBxL = _noise(key, start, chunk, mean)
    z_SxBxL = mean + jnp.exp(0.5 * log_var) * eps_SxBxL
    params = decode(model, z_SxBxL.reshape(chunk * b, -1))
    params = jax.tree.map(lambda p: p.reshape(chunk, b, *p.shape[1:]), params)
    log_q_SxB = dist.gaussian_log_prob(z_SxBxL, mean, log_var).sum(-1)
    log_pz_SxB = dist.standard_normal_log_prob(z_SxBxL).sum(-1)
    log_w_SxB = _log_px(model, x, params) + log_pz_SxB - log_q_SxB
    valid_S = start + jnp.arange(chunk) < k  # masks the padding of the last chunk
    log_w_SxB = jnp.where(valid_S[:, None], log_w_SxB, -jnp.inf)
    return jnp.logaddexp(lse_B, jax.nn.logsumexp(log_w_SxB, axis=0)), None

  starts = jnp.arange(-(-k // chunk)) * chunk  # ceil(k / chunk) chunks
  lse_B, _ = jax.lax.scan(body, jnp.full((b,), -jnp.inf, mean.dtype), starts)
  return lse_B - math.log(k)


@compiled.model_function(static_argnames=("num", "mean"))
def sample(model: VAE, key: jax.Array, num: int, mean: bool = False) -> jax.Array:
  """Draws ``z ~ N(0, I)`` and then ``x ~ p(x|z)`` (its median if ``mean``).

  Args:
    model: a `VAE`.
    key: PRNG key.
    num: number of images (static).
    mean: return the median of p(x|z) (``logits > 0`` for Bernoulli, the bin of
      the location for the logistic) instead of a draw.

  Returns:
    ``uint8[num, H, W, C]`` in data space (0/1 or 0..255).

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
  """
  key_z, key_x = jax.random.split(key)
  z = jax.random.normal(key_z, (num, model.latent_dim))
  return _draw(model, key_x, decode(model, z), mean)


def reconstruct(model: VAE, batch, key: jax.Array, mean: bool = True) -> jax.Array:
  """Reconstructions ``uint8[B, H, W, C]`` in data space.

  z ~ q(z|x) (sample 0 of ``key``), then the median of p(x|z), or a draw from it
  when ``mean`` is False."""
  _, _, z = _encode_sample(model, batch, key)
  return _draw(model, jax.random.fold_in(key, 1), decode(model, z), mean)


def interpolate(model: VAE, x_a: jax.Array, x_b: jax.Array, num_steps: int) -> jax.Array:
  """Latent interpolation: ``uint8[num_steps, H, W, C]`` decoded medians.

  Along the straight line from the posterior mean of ``x_a`` to that of ``x_b``
  (``uint8[H, W, C]`` images), both ends included."""
  mu, _ = encode(model, jnp.stack([x_a, x_b]))
  t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
  return _draw(model, None, decode(model, (1.0 - t) * mu[0] + t * mu[1]), True)


def latent_map(model: VAE, grid_size: int = 20, extent: float = 0.9) -> jax.Array:
  """Decoded medians over a grid of a 2-D latent space (Kingma & Welling, Fig. 4).

  Coordinates are the Gaussian quantiles of ``grid_size`` equally spaced
  probabilities covering the central ``extent`` of each axis' mass; ``z_1`` grows
  along a row, ``z_2`` upwards.

  Args:
    model: a `VAE` with ``latent_dim == 2``.
    grid_size: images per row and column (static).
    extent: probability mass per axis in ``(0, 1)``.

  Returns:
    ``uint8[grid_size**2, H, W, C]``, row by row.

  References:
    Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014 (figure 4).
  """
  if model.latent_dim != 2:
    raise ValueError(f"latent_map needs a 2-D latent space (config.model.latent_dim=2); "
                     f"this model has latent_dim={model.latent_dim}")
  if not 0.0 < extent < 1.0:
    raise ValueError(f"extent must be in (0, 1), got {extent}")
  q = jax.scipy.special.ndtri(jnp.linspace(0.5 - extent / 2, 0.5 + extent / 2, grid_size))
  z = jnp.stack(jnp.meshgrid(q, q[::-1]), -1).reshape(-1, 2)
  return _draw(model, None, decode(model, z), True)


@compiled.model_function
def visualizations(model: VAE, key: jax.Array, batch) -> dict[str, jax.Array]:
  """Image sets for ``experiments.sample``: reconstructions, interpolations, latent map.

  ``reconstructions`` interleaves up to 8 originals with their reconstructions;
  ``interpolations`` holds 8 rows of 8 steps between pairs of batch images;
  ``latent_map`` (when ``latent_dim == 2``) a 20 x 20 grid. All ``uint8[N, H, W,
  C]`` in data space; compiled once per model structure.
  """
  check_image_batch(batch, model.input_shape)
  x_BxHxWxC = batch["image"]
  x = x_BxHxWxC[:8]
  recon = reconstruct(model, {"image": x}, key)
  out = {"reconstructions": jnp.stack([x, recon], 1).reshape(-1, *x.shape[1:])}
  n = x_BxHxWxC.shape[0]
  idx_a, idx_b = jnp.arange(0, 16, 2) % n, jnp.arange(1, 17, 2) % n
  lines = jax.vmap(lambda a, b: interpolate(model, a, b, 8))(
      x_BxHxWxC[idx_a], x_BxHxWxC[idx_b])
  out["interpolations"] = lines.reshape(-1, *x.shape[1:])
  if model.latent_dim == 2:
    out["latent_map"] = latent_map(model)
  return out
