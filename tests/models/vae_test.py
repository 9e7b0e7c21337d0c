"""Tests of the VAE family (genjax/models/vae.py) on tiny models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax import flatten_util
from jax import test_util

import genjax
from genjax import distributions as dist
from genjax.models import vae

import mixed_precision  # tests/models/mixed_precision.py, shared with the family tests

SHAPE = (8, 8, 1)


def _config(**overrides) -> ml_collections.ConfigDict:
  base = dict(name="vae", input_shape=SHAPE, likelihood="bernoulli", architecture="mlp",
              hidden=(16,), channels=(8, 16), latent_dim=4, beta=1.0)
  base.update(overrides)
  return ml_collections.ConfigDict(base)


def _batch(shape=SHAPE, likelihood="bernoulli", batch_size=4, seed=0) -> dict:
  rng = np.random.default_rng(seed)
  if likelihood == "bernoulli":
    image = (rng.random((batch_size, *shape)) < 0.4).astype(np.uint8)
  else:
    image = rng.integers(0, 256, size=(batch_size, *shape)).astype(np.uint8)
  return {"image": jnp.asarray(image), "label": jnp.zeros((batch_size,), jnp.int32)}


def _jit(fn, model, static_argnames=()):
  """``jax.jit`` of ``fn(model, *args)`` as a function of the model's split state."""
  graphdef, state = nnx.split(model)
  jitted = jax.jit(lambda s, *a, **k: fn(nnx.merge(graphdef, s), *a, **k),
                   static_argnames=static_argnames)
  return lambda *a, **k: jitted(state, *a, **k)


def test_registered():
  assert genjax.models.get("vae") is vae


# ------------------------------------------------------------------------- KL


def test_analytic_kl_matches_monte_carlo():
  rng = np.random.default_rng(0)
  mean = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  log_var = jnp.asarray(rng.uniform(-2.0, 1.0, size=(6, 3)), jnp.float32)
  n = 100_000

  @jax.jit
  def monte_carlo(key):
    eps_NxBxL = jax.random.normal(key, (n, 6, 3))
    z_NxBxL = mean + jnp.exp(0.5 * log_var) * eps_NxBxL
    log_ratio_NxB = (dist.gaussian_log_prob(z_NxBxL, mean, log_var)
                     - dist.standard_normal_log_prob(z_NxBxL)).sum(-1)
    return log_ratio_NxB.mean(0), log_ratio_NxB.std(0) / np.sqrt(n)

  estimate, stderr = monte_carlo(jax.random.key(0))
  analytic = dist.gaussian_kl_standard_normal(mean, log_var).sum(-1)
  assert np.all(np.abs(estimate - analytic) < 5 * stderr + 1e-4), (estimate, analytic, stderr)


def test_eval_metrics_kl_is_the_analytic_kl_of_the_encoder():
  model = vae.build(_config(), jax.random.key(0))

  def run(m, batch, key):
    mean, log_var = vae.encode(m, batch["image"])
    return vae.eval_metrics(m, batch, key), dist.gaussian_kl_standard_normal(mean, log_var)

  metrics, kl_BxL = _jit(run, model)(_batch(), jax.random.key(1))
  np.testing.assert_allclose(metrics["kl"], kl_BxL.sum(-1), rtol=1e-5)
  np.testing.assert_allclose(metrics["elbo"], -(metrics["recon"] + metrics["kl"]), rtol=1e-6)
  assert all(v.shape == (4,) for v in metrics.values())


# ----------------------------------------------------------------------- IWAE


def test_iwae_with_one_sample_is_the_single_sample_elbo_estimator():
  model = vae.build(_config(), jax.random.key(0))

  def run(m, batch, key):
    ll_B = vae.log_likelihood(m, batch, key, num_samples=1)
    # The same z as eval_metrics (sample 0 of the key), with a Monte-Carlo KL.
    recon_B = vae.eval_metrics(m, batch, key)["recon"]
    mean, log_var = vae.encode(m, batch["image"])
    eps = jax.random.normal(jax.random.fold_in(key, 0), mean.shape)
    z = mean + jnp.exp(0.5 * log_var) * eps
    log_pz_minus_log_q = (dist.standard_normal_log_prob(z)
                          - dist.gaussian_log_prob(z, mean, log_var)).sum(-1)
    return ll_B, -recon_B + log_pz_minus_log_q

  ll_B, elbo_estimate_B = _jit(run, model)(_batch(), jax.random.key(3))
  np.testing.assert_allclose(ll_B, elbo_estimate_B, rtol=1e-5)


def test_iwae_bound_with_k_samples_matches_a_brute_force_log_mean_exp():
  """k = 5 importance weights computed one by one, averaged in float64 (the
  ``- log k`` term included), against the chunked scan (chunks of 2, one padded)."""
  model = vae.build(_config(), jax.random.key(0))
  k = 5

  def weights(m, batch, key):
    x = batch["image"]
    mean, log_var = vae.encode(m, x)
    out = []
    for i in range(k):  # sample i uses fold_in(key, i), as log_likelihood documents
      eps = jax.random.normal(jax.random.fold_in(key, i), mean.shape)
      z = mean + jnp.exp(0.5 * log_var) * eps
      log_px = vae._log_px(m, x, vae.decode(m, z))  # pylint: disable=protected-access
      out.append(log_px + (dist.standard_normal_log_prob(z)
                           - dist.gaussian_log_prob(z, mean, log_var)).sum(-1))
    return jnp.stack(out)

  batch, key = _batch(), jax.random.key(5)
  w = np.asarray(_jit(weights, model)(batch, key), np.float64)  # [k, B]
  top = w.max(0)
  want = top + np.log(np.exp(w - top).mean(0))
  got = vae.log_likelihood(model, batch, key, num_samples=k, chunk_size=2)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)
  assert np.all(np.asarray(got) > w.max(0) - np.log(k) - 1e-3)  # >= max_i w_i - log k


def test_iwae_bound_does_not_decrease_with_k():
  model = vae.build(_config(), jax.random.key(0))
  batch = _batch(batch_size=8)

  ll = _jit(vae.log_likelihood, model, ("num_samples",))
  # Mean over 8 keys and 8 examples. Key s draws the same first samples for every
  # k (the samples are nested), which keeps the comparison's noise low.
  b1, b10, b100 = (np.mean([ll(batch, jax.random.key(s), num_samples=k) for s in range(8)])
                   for k in (1, 10, 100))
  assert b1 < b10 < b100, (b1, b10, b100)


def test_iwae_chunked_equals_unchunked():
  model = vae.build(_config(), jax.random.key(0))

  def run(m, batch, key):  # chunk 5 pads the last chunk (12 = 5 + 5 + 2)
    return [vae.log_likelihood(m, batch, key, num_samples=12, chunk_size=c)
            for c in (12, 5, 1, None)]

  whole, *chunked = _jit(run, model)(_batch(), jax.random.key(5))
  for ll in chunked:
    np.testing.assert_allclose(ll, whole, rtol=1e-5)


def test_iwae_encodes_once(monkeypatch):
  calls = {"encode": 0}
  original = vae.encode

  def counting(model, x):
    calls["encode"] += 1
    return original(model, x)

  monkeypatch.setattr(vae, "encode", counting)
  model = vae.build(_config(), jax.random.key(0))
  jax.eval_shape(lambda: vae.log_likelihood(model, _batch(), jax.random.key(0),
                                            num_samples=10, chunk_size=3))
  assert calls["encode"] == 1


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_loss_gradients_match_finite_differences(likelihood):
  with jax.enable_x64(True):
    model = vae.build(_config(likelihood=likelihood, hidden=(8,), latent_dim=2),
                      jax.random.key(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    flat, unravel = flatten_util.ravel_pytree(params)  # one array: few eager ops
    flat = flat.astype(jnp.float64)
    batch, key = _batch(likelihood=likelihood, batch_size=2), jax.random.key(1)

    @jax.jit
    def loss_fn(flat):
      p = jax.tree.map(lambda v: v.astype(jnp.float64), unravel(flat))
      return vae.loss(nnx.merge(graphdef, p, rest), batch, key)[0]

    assert loss_fn(flat).dtype == jnp.float64
    test_util.check_grads(loss_fn, (flat,), order=1, modes=("rev",))


def test_tiny_model_overfits_one_batch():
  model = vae.build(_config(hidden=(32,)), jax.random.key(0))
  batch = _batch(batch_size=8)
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  graphdef, state = nnx.split((model, opt))

  @jax.jit
  def step(state, key):
    model, opt = nnx.merge(graphdef, state)
    (loss, _), grads = nnx.value_and_grad(
        lambda m: vae.loss(m, batch, key), has_aux=True)(model)
    opt.update(model, grads)
    return nnx.state((model, opt)), loss

  losses = []
  for i in range(300):
    state, loss = step(state, jax.random.key(i))
    losses.append(float(loss))
  assert losses[0] > 40.0  # about 64 * log 2 nats at initialisation
  assert np.mean(losses[-20:]) < 0.3 * losses[0], (losses[0], losses[-20:])


# ------------------------------------------------------------- jit and retrace


def test_jitted_equals_eager_and_no_retrace():
  model = vae.build(_config(), jax.random.key(0))
  graphdef, state = nnx.split(model)
  traces = {"loss": 0, "ll": 0}

  def loss_fn(s, batch, key):
    traces["loss"] += 1
    return vae.loss(nnx.merge(graphdef, s), batch, key)

  def ll_fn(s, batch, key):
    traces["ll"] += 1
    return vae.log_likelihood(nnx.merge(graphdef, s), batch, key, num_samples=6,
                              chunk_size=4)

  loss_jit, ll_jit = jax.jit(loss_fn), jax.jit(ll_fn)
  for seed in range(2):
    batch, key = _batch(seed=seed), jax.random.key(seed)
    loss, metrics = loss_jit(state, batch, key)
    eager_loss, eager_metrics = vae.loss(model, batch, key)
    np.testing.assert_allclose(loss, eager_loss, rtol=1e-5)
    for name in ("loss", "elbo", "recon", "kl", "bits_per_dim"):
      np.testing.assert_allclose(metrics[name], eager_metrics[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ll_jit(state, batch, key),
        vae.log_likelihood(model, batch, key, num_samples=6, chunk_size=4), rtol=1e-5)
  assert traces == {"loss": 1, "ll": 1}
  assert loss_jit._cache_size() == 1 and ll_jit._cache_size() == 1


def test_loss_metrics():
  model = vae.build(_config(beta=0.5), jax.random.key(0))
  loss, m = _jit(vae.loss, model)(_batch(), jax.random.key(0))
  assert set(m) == {"loss", "elbo", "recon", "kl", "bits_per_dim"}
  assert all(v.shape == () for v in m.values())
  np.testing.assert_allclose(loss, m["recon"] + 0.5 * m["kl"], rtol=1e-6)
  np.testing.assert_allclose(m["elbo"], -(m["recon"] + m["kl"]), rtol=1e-6)
  np.testing.assert_allclose(m["bits_per_dim"], -m["elbo"] / (64 * np.log(2)), rtol=1e-6)


# ------------------------------------------------ architectures and likelihoods


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_builds_and_runs(architecture, likelihood):
  shape = SHAPE
  model = vae.build(_config(architecture=architecture, likelihood=likelihood,
                            input_shape=shape), jax.random.key(0))
  assert (model.input_shape, model.likelihood, model.latent_dim, model.beta) == (
      shape, likelihood, 4, 1.0)
  batch = _batch(shape, likelihood, batch_size=2)

  def run(m, batch, key):
    return vae.loss(m, batch, key)[0], vae.sample(m, key, 3)

  loss, x = _jit(run, model)(batch, jax.random.key(1))
  assert np.isfinite(loss)
  assert x.shape == (3, *shape) and x.dtype == jnp.uint8
  top = 1 if likelihood == "bernoulli" else 255
  assert int(x.max()) <= top
  if likelihood == "discretized_logistic":
    assert int(x.max()) > 1  # draws use the 8-bit range, not 0/1


@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (7, 9, 3)])
def test_shapes(architecture, likelihood, shape):
  """Every function maps back to exactly H x W x C (traced only: no compilation)."""
  model = nnx.eval_shape(lambda: vae.build(  # abstract parameters
      _config(architecture=architecture, likelihood=likelihood, input_shape=shape),
      jax.random.key(0)))
  batch, key = _batch(shape, likelihood, batch_size=2), jax.random.key(1)
  loss, metrics = jax.eval_shape(vae.loss, model, batch, key)
  assert loss.shape == () and all(v.shape == () for v in metrics.values())
  ll = jax.eval_shape(lambda m: vae.log_likelihood(m, batch, key, num_samples=5,
                                                   chunk_size=2), model)
  assert ll.shape == (2,) and ll.dtype == jnp.float32
  for mean in (False, True):
    x = jax.eval_shape(lambda m: vae.sample(m, key, 3, mean=mean), model)
    assert x.shape == (3, *shape) and x.dtype == jnp.uint8
  x = jax.eval_shape(lambda m: vae.reconstruct(m, batch, key), model)
  assert x.shape == (2, *shape) and x.dtype == jnp.uint8
  params = jax.eval_shape(lambda m: vae.decode(m, jnp.zeros((2, 4))), model)
  want = {"logits"} if likelihood == "bernoulli" else {"means", "log_scales"}
  assert set(params) == want and all(p.shape == (2, *shape) for p in params.values())


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_runs_at_mnist_size(architecture):
  shape = (28, 28, 1)
  model = vae.build(_config(architecture=architecture, input_shape=shape), jax.random.key(0))
  loss, _ = _jit(vae.loss, model)(_batch(shape, batch_size=2), jax.random.key(1))
  assert np.isfinite(loss) and 28 * 28 * 0.3 < loss < 28 * 28 * 1.5  # about 784 log 2


def test_minimal_config_uses_defaults():
  model = nnx.eval_shape(lambda: vae.build(
      ml_collections.ConfigDict({"name": "vae", "input_shape": (28, 28, 1)}),
      jax.random.key(0)))
  assert model.encoder.layers[0].kernel.shape == (784, 512)
  assert (model.likelihood, model.latent_dim, model.architecture, model.beta) == (
      "bernoulli", 50, "mlp", 1.0)


@pytest.mark.parametrize("batch,error,match", [
    ({"image": jnp.zeros((2, 7, 8, 1), jnp.uint8)}, ValueError, "built for images of shape"),
    ({"image": jnp.zeros((2, 8, 8, 1), jnp.float32)}, TypeError, "expected uint8"),
    ({"pixels": jnp.zeros((2, 8, 8, 1), jnp.uint8)}, TypeError, "'image' entry"),
])
def test_bad_batch_gives_clear_error(batch, error, match):
  model = vae.build(_config(), jax.random.key(0))
  with pytest.raises(error, match=match):
    vae.loss(model, batch, jax.random.key(0))
  with pytest.raises(error, match=match):
    vae.log_likelihood(model, batch, jax.random.key(0), num_samples=2)


@pytest.mark.parametrize("override,match", [
    ({"likelihood": "gaussian"}, "likelihood must be one of 'bernoulli', 'discretized_logistic'"),
    ({"architecture": "resnet"}, "architecture must be one of 'mlp', 'conv'"),
    ({"activation": "swish2"}, "activation must be one of"),
    ({"latent_dim": 0}, "latent_dim must be an int >= 1"),
    ({"latent_dim": 2.5}, "latent_dim must be an int >= 1"),
    ({"input_shape": (8, 8)}, r"input_shape must be \(H, W, C\)"),
    ({"input_shape": (8, -8, 1)}, "input_shape must be a sequence of positive ints"),
    ({"input_shape": ()}, r"input_shape must be \(H, W, C\)"),
    ({"hidden": (16, 0)}, "hidden must be a sequence of positive ints"),
    ({"architecture": "conv", "channels": ()}, "channels must be a sequence of positive ints"),
    ({"beta": -1.0}, "beta must be a number >= 0"),
    ({"name": "glow"}, "expected 'vae'"),
    ({"latnet_dim": 3}, "unknown field.*latnet_dim"),
])
def test_bad_config_gives_clear_error(override, match):
  with pytest.raises(ValueError, match=match):
    vae.build(_config(**override), jax.random.key(0))


# ------------------------------------------------------------ visualizations


def test_latent_map_shape_and_error():
  model = vae.build(_config(latent_dim=2), jax.random.key(0))
  grid = jax.eval_shape(lambda m: vae.latent_map(m, grid_size=5), model)
  assert grid.shape == (25, *SHAPE) and grid.dtype == jnp.uint8
  with pytest.raises(ValueError, match="latent_dim=2"):
    vae.latent_map(vae.build(_config(), jax.random.key(0)))


def test_interpolate_ends_at_the_decoded_posterior_means():
  model = vae.build(_config(likelihood="discretized_logistic"), jax.random.key(0))
  x = _batch(likelihood="discretized_logistic", batch_size=2)["image"]

  def run(m, x):
    means = vae.decode(m, vae.encode(m, x)[0])["means"]
    ends = jnp.clip(jnp.round((means + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
    return vae.interpolate(m, x[0], x[1], num_steps=5), ends

  path, ends = _jit(run, model)(x)
  assert path.shape == (5, *SHAPE) and path.dtype == jnp.uint8
  np.testing.assert_array_equal(path[jnp.array([0, 4])], ends)


def test_visualizations():
  model = vae.build(_config(latent_dim=2), jax.random.key(0))
  batch = _batch(batch_size=6)
  vis = vae.visualizations(model, jax.random.key(0), batch)
  assert {k: v.shape[0] for k, v in vis.items()} == {
      "reconstructions": 12, "interpolations": 64, "latent_map": 400}
  for images in vis.values():
    assert images.shape[1:] == SHAPE and images.dtype == jnp.uint8 and int(images.max()) <= 1
  np.testing.assert_array_equal(vis["reconstructions"][0::2], batch["image"])
  np.testing.assert_array_equal(vis["reconstructions"][1::2],
                                _jit(vae.reconstruct, model)(batch, jax.random.key(0)))
  # Without a 2-D latent space there is no latent map (traced only).
  model = vae.build(_config(latent_dim=4), jax.random.key(0))
  vis = jax.eval_shape(lambda m: vae.visualizations(m, jax.random.key(0), batch), model)
  assert {k: v.shape[0] for k, v in vis.items()} == {"reconstructions": 12,
                                                      "interpolations": 64}


# ------------------------------------------------------------ genjax.nn pieces


def test_nn_kernel_init_equals_flax_default():
  """The flat, jitted kernel init is a compile-time measure only: same numbers."""
  key = jax.random.key(1)
  flax_default = jax.jit(nnx.initializers.lecun_normal(), static_argnums=1)
  np.testing.assert_array_equal(genjax.nn.kernel_init()(key, (2, 2, 2, 3)),
                                flax_default(key, (2, 2, 2, 3)))
  np.testing.assert_array_equal(genjax.nn.linear(4, 8, rngs=nnx.Rngs(params=key)).kernel[...],
                                nnx.Linear(4, 8, rngs=nnx.Rngs(params=key)).kernel[...])


@pytest.mark.parametrize("architecture, likelihood", [
    ("mlp", "bernoulli"), ("conv", "discretized_logistic")])
def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_loss(
    architecture, likelihood):
  """``dtype="bfloat16"``: the same parameters (float32) give a loss within
  bfloat16's rounding of the float32 one, the products and convolutions run in
  bfloat16, and the gradient reaches every parameter as float32."""
  batch = _batch(likelihood=likelihood, batch_size=8)
  key = jax.random.key(3)
  losses = {}
  for dtype in ("float32", "bfloat16"):
    model = vae.build(_config(architecture=architecture, likelihood=likelihood,
                              dtype=dtype), jax.random.key(0))
    losses[dtype] = _jit(lambda m, b, k: vae.loss(m, b, k)[0], model)(batch, key)
  assert losses["bfloat16"].dtype == jnp.float32
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)
  assert losses["bfloat16"] != losses["float32"]  # it did compute in bfloat16
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_of(p):
    return vae.loss(nnx.merge(graphdef, p, rest), batch, key)[0]

  mixed_precision.assert_bfloat16_ops(jax.make_jaxpr(loss_of)(params))
  grads = jax.grad(loss_of)(params)
  for g in jax.tree.leaves(grads):
    assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_unknown_dtype_names_the_choices():
  with pytest.raises(ValueError, match=r"config.model.dtype must be one of 'float32', "
                                       r"'bfloat16'; got 'float16'"):
    vae.build(_config(dtype="float16"), jax.random.key(0))
