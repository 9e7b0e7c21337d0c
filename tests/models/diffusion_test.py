"""Diffusion: the schedules and forward process, the bound, the samplers, guidance, EMA."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from genjax import train
from genjax.models import diffusion

import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check


def _config(**kw):
  base = dict(name="diffusion", input_shape=(4, 4, 1), channels=4, channel_mults=(1, 2),
              num_res_blocks=1, attention_resolutions=(2,), num_groups=2,
              schedule="cosine", timesteps=0, schedule_width=8, sample_steps=5)
  return ml_collections.ConfigDict({**base, **kw})


def _model(seed=0, scale=0.3, **kw):
  """A model whose every weight is random (the zero-initialised output layers too),
  so that its predictions depend on the input."""
  model = diffusion.build(_config(**kw), jax.random.key(seed))
  state = nnx.state(model, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  nnx.update(model, jax.tree.unflatten(
      tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
  train.ema_update(model.ema, model.core, 0.0)  # the average starts equal to the weights
  return model


def _batch(b=3, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.integers(0, 256, (b, 4, 4, 1)), jnp.uint8),
          "label": jnp.asarray(rng.integers(0, 10, (b,)), jnp.int32)}


# ------------------------------------------------------------- forward process


@pytest.mark.parametrize("schedule", ["linear", "cosine", "learned"])
def test_forward_process_has_the_schedules_mean_and_variance(schedule):
  model = diffusion.build(_config(schedule=schedule), jax.random.key(0))
  x = _batch(1)["image"]
  t = jnp.full((20_000,), 0.4)
  z, eps = diffusion.q_sample(model, jnp.broadcast_to(x, (20_000, 4, 4, 1)), t,
                              jax.random.key(1))
  alpha, sigma = diffusion.alpha_sigma(diffusion.gamma(model, jnp.float32(0.4)))
  xu = diffusion.to_unit(x[0])
  np.testing.assert_allclose(z.mean(0), alpha * xu, atol=4 * float(sigma) / math.sqrt(20_000))
  np.testing.assert_allclose(z.var(0), jnp.full(xu.shape, sigma ** 2), rtol=0.05)
  np.testing.assert_allclose(z, alpha * xu + sigma * eps, atol=1e-5)
  assert float(alpha ** 2 + sigma ** 2) == pytest.approx(1.0, abs=1e-6)


def test_schedules_are_what_their_documentation_says():
  t = jnp.linspace(0.0, 1.0, 11)
  cosine = diffusion.build(_config(schedule="cosine", gamma_min=-10.0, gamma_max=6.0),
                           jax.random.key(0))
  g = diffusion.gamma(cosine, t)
  np.testing.assert_allclose([g[0], g[-1]], [-10.0, 6.0], atol=1e-4)
  # alpha^2 = cos^2(a t + b): the cosine schedule of Nichol & Dhariwal
  b = math.atan(math.exp(-5.0))
  a = math.atan(math.exp(3.0)) - b
  np.testing.assert_allclose(diffusion.alpha_sigma(g)[0] ** 2, jnp.cos(a * t + b) ** 2,
                             rtol=1e-4, atol=1e-7)
  # linear: DDPM's 1,000-step product of (1 - beta_i), beta from 1e-4 to 0.02
  linear = diffusion.build(_config(schedule="linear"), jax.random.key(0))
  betas = np.linspace(1e-4, 0.02, 1000)
  abar = np.cumprod(1.0 - betas)
  for i in (100, 500, 900):
    s = i / 1000  # the step i's time s = t_min + (1 - t_min) t
    tt = (s - 1e-3) / (1.0 - 1e-3)
    got = diffusion.alpha_sigma(diffusion.gamma(linear, jnp.float32(tt)))[0] ** 2
    # the continuous-time form: log abar within 1 % of the discrete product's
    assert math.log(float(got)) == pytest.approx(math.log(abar[i - 1]), rel=0.01), i
  # the learned schedule starts as the line from gamma_min to gamma_max, monotone
  learned = diffusion.build(_config(schedule="learned", loss="vdm"), jax.random.key(0))
  g = diffusion.gamma(learned, jnp.linspace(0.0, 1.0, 101))
  assert float(g[0]) == pytest.approx(-13.3, abs=0.5) and float(g[-1]) == pytest.approx(5.0,
                                                                                     abs=0.5)
  assert bool(jnp.all(jnp.diff(g) > 0))


def test_prior_term_is_small_for_data_in_range():
  model = diffusion.build(_config(), jax.random.key(0))
  for value in (0, 128, 255):
    x = diffusion.to_unit(jnp.full((1, 4, 4, 1), value, jnp.uint8))
    kl = diffusion._prior_kl(model, model.core, x)  # pylint: disable=protected-access
    assert 0.0 < float(kl[0]) / 16 < 0.01  # nats per dimension


# ----------------------------------------------------------------- the bound


def test_decoder_probabilities_sum_to_one_and_peak_at_the_right_value():
  for schedule in ("cosine", "learned"):
    model = diffusion.build(_config(schedule=schedule), jax.random.key(0))
    alpha0, _ = diffusion.alpha_sigma(diffusion.gamma(model, jnp.zeros(())))
    k = jnp.arange(0, 256, 15)
    z0 = alpha0 * diffusion.to_unit(k) + 0.3 * jax.random.normal(jax.random.key(0), k.shape)
    probs = jnp.exp(diffusion.decoder_log_probs(model, z0))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    exact = jnp.exp(diffusion.decoder_log_probs(model, alpha0 * diffusion.to_unit(k)))
    np.testing.assert_array_equal(exact.argmax(-1), k)


@pytest.mark.parametrize("kw", [dict(), dict(parameterization="v", schedule="learned")])
def test_bound_at_initialisation_is_finite_and_a_log_probability(kw):
  model = diffusion.build(_config(**kw), jax.random.key(0))
  ll = diffusion.log_likelihood(model, _batch(), jax.random.key(1), num_time_samples=2)
  assert ll.shape == (3,) and bool(jnp.all(jnp.isfinite(ll))) and bool(jnp.all(ll < 0))
  loss, metrics = diffusion.loss(model, _batch(), jax.random.key(1))
  assert np.isfinite(float(loss))
  assert float(loss) == pytest.approx(
      float(metrics["prior_bpd"] + metrics["recon_bpd"] + metrics["diffusion_bpd"]))


def test_monte_carlo_bound_is_unbiased_against_the_exact_sum_over_steps():
  """T = 4 discrete steps: one random step (times T) per draw, against all four."""
  model = _model(timesteps=4, schedule="linear", channel_mults=(1,), attention_resolutions=())
  batch = _batch(2)
  keys = jax.random.split(jax.random.key(3), 1000)

  @jax.jit
  def both(k):
    mc = diffusion.log_likelihood(model, batch, k, num_time_samples=1)
    exact = diffusion.log_likelihood(model, batch, k, num_time_samples=None)
    return mc, exact

  mc, exact = jax.vmap(both)(keys)
  diff = np.asarray(mc - exact, np.float64)  # same reconstruction draw: it cancels
  se = diff.std(0) / math.sqrt(len(keys))
  assert np.all(np.abs(diff.mean(0)) < 4 * se), (diff.mean(0), se)
  assert np.all(diff.std(0) > 0)  # the estimates really differ draw by draw
  # and a bound that dropped a step would be caught: the steps' terms are not small
  assert np.all(np.abs(np.asarray(exact).mean(0) - np.asarray(mc).mean(0)) < 0.1 *
                np.abs(np.asarray(exact).mean(0)))


def test_v_parameterisation_recovers_the_noise():
  model = diffusion.build(_config(parameterization="v"), jax.random.key(0))
  x = diffusion.to_unit(_batch()["image"])
  eps = jax.random.normal(jax.random.key(1), x.shape)
  t = jnp.array([0.1, 0.5, 0.9])
  g = diffusion.gamma(model, t)
  a, s = [v[:, None, None, None] for v in diffusion.alpha_sigma(g)]
  z, v = a * x + s * eps, a * eps - s * x
  np.testing.assert_allclose(diffusion.eps_from_v(v, z, g), eps, atol=1e-5)


# ------------------------------------------------------------------- sampling


def _gaussian_eps(mu, std, gamma_fn):
  """The exact E[eps | z_t] for data x ~ N(mu, std^2) per dimension."""
  def eps_fn(z, t):
    alpha, sigma = diffusion.alpha_sigma(gamma_fn(t))
    return sigma * (z - alpha * mu) / (alpha ** 2 * std ** 2 + sigma ** 2)
  return eps_fn


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_samplers_with_a_perfect_noise_prediction_recover_gaussian_data(sampler):
  model = diffusion.build(_config(), jax.random.key(0))
  gamma_fn = lambda t: diffusion.gamma(model, t)
  mu, std = 0.3, 0.2
  x = jax.jit(lambda k: diffusion.sample_latents(
      _gaussian_eps(mu, std, gamma_fn), gamma_fn, k, (10_000, 2), 1000, sampler,
      clip=False))(jax.random.key(0))
  # the mean is off by the prior's mismatch only: z_1 ~ N(0, I) instead of
  # q(z_1) = N(alpha_1 mu, ...), about 0.005 here
  assert float(x.mean()) == pytest.approx(mu, abs=0.01)
  assert float(x.std()) == pytest.approx(std, rel=0.03)


def test_ddim_with_eta_zero_converges_to_the_probability_flow_ode():
  """DDIM (eta = 0) over the training steps against the ODE solved by Runge-Kutta."""
  model = _model(timesteps=100, scale=0.05, channel_mults=(1,), attention_resolutions=())
  key = jax.random.key(5)
  run = lambda **kw: diffusion.sample_latents(  # pylint: disable=unnecessary-lambda-assignment
      lambda z, t: diffusion._predict_eps(  # pylint: disable=protected-access
          model, model.ema, z, jnp.full((z.shape[0],), t),
          diffusion.gamma(model, jnp.full((z.shape[0],), t)), None),
      lambda t: diffusion.gamma(model, t), key, (4, 4, 4, 1), clip=False, **kw)
  ode = run(steps=200, sampler="ode")
  ddim_100 = run(steps=100, sampler="ddim")
  ddim_10 = run(steps=10, sampler="ddim")
  ddim_100_again = run(steps=100, sampler="ddim")
  np.testing.assert_array_equal(ddim_100, ddim_100_again)  # deterministic
  err_100 = float(jnp.abs(ddim_100 - ode).max())
  err_10 = float(jnp.abs(ddim_10 - ode).max())
  assert err_100 < 0.01 * float(jnp.abs(ode).max()), (err_100, err_10)
  assert err_100 < err_10 / 4  # first order: 10x the steps, about 10x closer


def test_sample_gives_8bit_images_and_guidance_uses_the_labels():
  model = _model(num_classes=3, channel_mults=(1,), attention_resolutions=())
  key = jax.random.key(0)
  y0 = diffusion.sample(model, key, 4, labels=jnp.zeros(4, jnp.int32))
  assert y0.shape == (4, 4, 4, 1) and y0.dtype == jnp.uint8
  y1 = diffusion.sample(model, key, 4, labels=jnp.ones(4, jnp.int32))
  assert not np.array_equal(y0, y1)
  # guidance 0 is the conditional model; a positive scale changes the samples
  g0 = diffusion.sample(model, key, 4, labels=jnp.zeros(4, jnp.int32), guidance=0.0)
  g3 = diffusion.sample(model, key, 4, labels=jnp.zeros(4, jnp.int32), guidance=3.0)
  np.testing.assert_array_equal(g0, y0)
  assert not np.array_equal(g3, y0)
  with pytest.raises(ValueError, match="unknown sampler"):
    diffusion.sample(model, key, 4, sampler="euler")
  with pytest.raises(ValueError, match="labels has 2 entries"):
    diffusion.sample(model, key, 4, labels=jnp.zeros(2, jnp.int32))


# -------------------------------------------------------------- training, EMA


def test_update_trains_the_weights_and_moves_the_average():
  model = diffusion.build(_config(ema_decay=0.9, ema_warmup=False, channel_mults=(1,)),
                          jax.random.key(0))
  opt = diffusion.make_optimizer(model, ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-2, schedule="constant", warmup_steps=0,
      final_lr_fraction=0.0, grad_clip_norm=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
      eps=1e-8)), 10)
  leaves = lambda m, f: [np.asarray(x) for x in jax.tree.leaves(nnx.state(m, f))]
  core0, ema0 = leaves(model.core, nnx.Param), leaves(model.ema, train.EMAWeight)
  metrics = nnx.jit(diffusion.update)(model, opt, _batch(), jax.random.key(1))
  core1, ema1 = leaves(model.core, nnx.Param), leaves(model.ema, train.EMAWeight)
  assert float(metrics["ema_decay"]) == pytest.approx(0.9)
  assert any(not np.array_equal(a, b) for a, b in zip(core0, core1))
  for e0, c1, e1 in zip(ema0, core1, ema1):
    np.testing.assert_allclose(e1, 0.9 * e0 + 0.1 * c1, rtol=1e-5, atol=1e-6)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="config.model.schedule"):
    diffusion.build(_config(schedule="quadratic"), jax.random.key(0))
  with pytest.raises(ValueError, match="loss='vdm'"):
    diffusion.build(_config(schedule="learned", loss="simple"), jax.random.key(0))
  with pytest.raises(ValueError, match="config.model.channel_mults"):
    diffusion.build(_config(channel_mults=()), jax.random.key(0))
  with pytest.raises(ValueError, match="unknown field"):
    diffusion.build(_config(nope=1), jax.random.key(0))
  with pytest.raises(ValueError, match="config.model.fourier_features"):
    diffusion.build(_config(fourier_features=7), jax.random.key(0))


def test_fourier_features_locate_z_inside_its_8bit_bin():
  """VDM's input features: ``sin, cos(2^n 2 pi z)`` per channel; at ``n = 7`` they
  repeat every bin (equal on every bin centre) and resolve offsets inside a bin."""
  z = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 3, 3, 2)), jnp.float32)
  f = diffusion.fourier_features(z, (6, 7))
  assert f.shape == (2, 3, 3, 2 * 5) and f.dtype == jnp.float32
  np.testing.assert_array_equal(f[..., :2], z)
  for c in range(2):
    for j, n in enumerate((6, 7)):
      w = 2.0 * np.pi * 2.0 ** n
      np.testing.assert_allclose(f[..., 2 + 2 * c + j], np.sin(w * np.asarray(z[..., c])),
                                 atol=2e-4)
      np.testing.assert_allclose(f[..., 6 + 2 * c + j], np.cos(w * np.asarray(z[..., c])),
                                 atol=2e-4)
  centres = diffusion.to_unit(jnp.arange(256, dtype=jnp.uint8)).reshape(1, 16, 16, 1)
  per_bin = diffusion.fourier_features(centres, (7,))[..., 1:]
  np.testing.assert_allclose(per_bin - per_bin[:, :1, :1], 0.0, atol=2e-3)
  quarter = diffusion.fourier_features(centres + 1.0 / 512, (7,))[..., 1:]  # a quarter bin up
  assert float(jnp.abs(quarter - per_bin).min()) > 0.9
  assert diffusion.fourier_features(z, ()) is z
  model = _model(fourier_features=(6, 7))  # the U-Net reads them, and the bound holds
  assert model.core.unet.conv_in.kernel.shape[-2] == 5
  ll = diffusion.log_likelihood(model, _batch(), jax.random.key(0))
  assert np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_bfloat16_computes_the_unet_in_bfloat16_with_a_float32_loss_and_bound():
  """``dtype="bfloat16"``: the U-Net's products and convolutions are bfloat16 (the
  attention logits float32); parameters, loss and bound float32, close to float32's."""
  mixed_precision.check_bfloat16(
      diffusion, lambda dtype: _model(channel_mults=(1,), attention_resolutions=(), dtype=dtype),
      _batch())
