"""Tests of PixelCNN++ (genjax/models/pixelcnn_pp.py, genjax/nn/shifted.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import genjax
from genjax.models import pixelcnn_pp as pp

import pixel_testing  # tests/models/pixel_testing.py, shared by the pixel-model tests
import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check

_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
# One tiny architecture for every test (building compiles each kernel shape once).
_TINY = dict(features=8, num_resnet=1, num_scales=3, num_mixtures=2)


@functools.lru_cache(maxsize=None)
def _model(shape=(4, 4, 3), seed=0, **kw):
  """A tiny model with random biases: at initialisation (zero biases) the first
  pixel's outputs are exactly 0, which would hide its G-on-R coupling."""
  cfg = dict(name="pixelcnn_pp", input_shape=shape, **{**_TINY, **kw})
  model = pp.build(ml_collections.ConfigDict(cfg), jax.random.key(seed))
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(seed)
  state = jax.tree.map_with_path(
      lambda path, a: (a + 0.1 * rng.normal(size=a.shape).astype(np.float32)
                       if "bias" in jax.tree_util.keystr(path) else a), state)
  return nnx.merge(graphdef, state)


def _images(shape, n=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, *shape)), jnp.uint8)


_call = pixel_testing.call


def _random_mixture(rng, lead, channels, k, scale=1.0):
  """Uncoupled `Mixture` parameters ``[*lead, ...]`` with moderate random values."""
  pairs = channels * (channels - 1) // 2
  f = lambda *s, lo=-1.0, hi=1.0: jnp.asarray(rng.uniform(lo, hi, (*lead, *s)), jnp.float32)
  return pp.Mixture(f(k, lo=-2, hi=2), f(channels, k, lo=-1.2, hi=1.2) * scale,
                    f(channels, k, lo=-4.5, hi=-1.0), f(pairs, k, lo=-0.99, hi=0.99))


# ------------------------------------------------------- the likelihood itself


def _np_log_bin_prob(x, mean, log_scale):
  """log P(X = x) for one discretized logistic by CDF differences, float64.

  ``CDF(upper) - CDF(lower)``, written as ``SF(lower) - SF(upper)`` above the
  mean so that neither difference cancels to 0."""
  sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
  centre = 2.0 * x / 255.0 - 1.0
  s = np.exp(max(log_scale, -7.0))
  a = np.inf if x == 255 else (centre + 1 / 255 - mean) / s
  b = -np.inf if x == 0 else (centre - 1 / 255 - mean) / s
  if b > 0:
    return np.log(sigmoid(-b) - sigmoid(-a))
  return np.log(sigmoid(a) - sigmoid(b))


def _np_pixel_log_prob(x_C, logits_K, means_CxK, log_scales_CxK, coeffs_PxK):
  """log p(pixel) by the paper's formula: shared component, coupled means, float64."""
  x_C, logits_K = np.asarray(x_C, np.int64), np.asarray(logits_K, np.float64)
  means_CxK, log_scales_CxK = np.asarray(means_CxK, np.float64), np.asarray(log_scales_CxK)
  coeffs_PxK = np.asarray(coeffs_PxK, np.float64)
  log_w = logits_K - np.log(np.sum(np.exp(logits_K - logits_K.max()))) - logits_K.max()
  v = 2.0 * x_C / 255.0 - 1.0
  terms = []
  for k in range(len(logits_K)):
    term = log_w[k]
    for c in range(len(x_C)):
      mean = means_CxK[c, k]
      if c == 1:
        mean += coeffs_PxK[0, k] * v[0]
      if c == 2:
        mean += coeffs_PxK[1, k] * v[0] + coeffs_PxK[2, k] * v[1]
      term += _np_log_bin_prob(x_C[c], mean, log_scales_CxK[c, k])
    terms.append(term)
  top = max(terms)
  return top + np.log(np.sum(np.exp(np.array(terms) - top)))


def _coupled_log_prob(mix, x_NxC):
  """`pp.pixel_log_prob` of pixels ``x`` [N, C] under uncoupled ``mix`` (fields [N, ...])."""
  means = pp.coupled_means(mix.means, mix.coeffs, x_NxC.astype(jnp.float32) * 2 / 255 - 1)
  one = lambda a: a[:, None, None]
  return pp.pixel_log_prob(pp.Mixture(one(mix.logits), one(means), one(mix.log_scales),
                                      one(mix.coeffs)), x_NxC[:, None, None])[:, 0, 0]


@jax.jit  # optimised: 16.7M values
def _joint_probs_jit(mix):
  """P(r, g, b) over all 256^3 values of one pixel, ``[256, 256, 256]`` (mix fields [...])."""
  gb = jnp.stack(jnp.meshgrid(jnp.arange(256), jnp.arange(256), indexing="ij"), -1)
  gb = gb.reshape(-1, 2)
  tile = lambda a: jnp.broadcast_to(a, (gb.shape[0], *a.shape))

  def one_red(r):
    x = jnp.concatenate([jnp.full((gb.shape[0], 1), r), gb], axis=1)
    return jnp.exp(_coupled_log_prob(jax.tree.map(tile, mix), x)).reshape(256, 256)

  return jax.lax.map(one_red, jnp.arange(256))


@functools.lru_cache(maxsize=None)
def _joint(seed):
  """A random RGB `Mixture` (K = 2) and its exact joint ``float64[256, 256, 256]``."""
  mix = _random_mixture(np.random.default_rng(seed), (), 3, 2)
  return mix, np.asarray(_joint_probs_jit(mix), np.float64)


def test_registered():
  assert genjax.models.get("pixelcnn_pp") is pp
  assert "pixelcnn_pp" in genjax.models.names()


def test_grey_mixture_sums_to_one_over_the_256_values():
  rng = np.random.default_rng(0)
  mix = _random_mixture(rng, (32,), 1, 4)
  mix = mix._replace(log_scales=mix.log_scales.at[:4].set(-9.0).at[4:8].set(3.0))  # extremes
  values = jnp.arange(256)[:, None, None, None, None]  # [V, 1, 1, 1, C]
  lp = _jit(lambda m: pp.pixel_log_prob(
      jax.tree.map(lambda a: a[None, :, None, None], m), values))(mix)  # [V, 32, 1, 1]
  assert np.all(np.isfinite(lp))
  np.testing.assert_allclose(jax.nn.logsumexp(lp[..., 0, 0], axis=0), 0.0, atol=2e-5)


def test_rgb_coupled_mixture_sums_to_one_over_all_256_cubed_values():
  """The full sum over 16.7M (r, g, b) of one pixel, with coupling and 2 components.

  A wrong coupling (e.g. a channel coupled to itself or to a later one) breaks it."""
  _, joint = _joint(1)
  assert np.all(joint >= 0)
  np.testing.assert_allclose(joint.sum(), 1.0, atol=1e-4)


def test_pixel_log_prob_matches_brute_force_cdf_differences():
  rng = np.random.default_rng(2)
  n = 64
  mix = _random_mixture(rng, (n,), 3, 3)
  x = rng.integers(0, 256, (n, 3))
  x[:8] = 0
  x[8:16] = 255
  x[16:24, 1] = 0
  x[24:32, 2] = 255
  got = _jit(_coupled_log_prob)(mix, jnp.asarray(x))
  want = [_np_pixel_log_prob(x[i], *(np.asarray(a[i]) for a in mix)) for i in range(n)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------- the network: causality


@functools.lru_cache(maxsize=None)
def _jacobian(shape, **kw):
  """d (random projection of the parameters of each sub-pixel) / d input: [HWC, HWC].

  The parameters of sub-pixel (i, j, c): the mixture logits of pixel (i, j) and
  channel c's coupled means and log-scales."""
  model = _model(shape, **kw)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, (1, *shape)), jnp.float32)
  k = model.num_mixtures
  w = [jnp.asarray(rng.normal(size=k), jnp.float32) for _ in range(3)]

  def f(m, v):
    v = v.reshape(1, *shape)
    mix = m(v)
    means = pp.coupled_means(mix.means, mix.coeffs, v)
    out = (means @ w[0] + mix.log_scales @ w[1]) + (mix.logits @ w[2])[..., None]
    return out.reshape(-1)

  return np.asarray(_call(lambda m, v: jax.jacrev(lambda u: f(m, u))(v), model,
                          x.reshape(-1)))


@pytest.mark.parametrize("shape, kw", [((4, 4, 3), {}), ((8, 8, 1), {"num_resnet": 2})])
def test_causality_by_gradient(shape, kw):
  """Sub-pixel (i, j, c) depends on no pixel at or after (i, j), except channels < c."""
  jac = _jacobian(shape, **kw)
  h, w, c = shape
  order = [(i, j, ch) for i in range(h) for j in range(w) for ch in range(c)]
  for t, (i, j, ch) in enumerate(order):
    for s, (i2, j2, ch2) in enumerate(order):
      allowed = (i2, j2) < (i, j) or ((i2, j2) == (i, j) and ch2 < ch)
      if not allowed:
        assert jac[t, s] == 0.0, ((i, j, ch), (i2, j2, ch2))
      elif (i2, j2) == (i, j):  # the coupling: G on R, B on R and G
        assert jac[t, s] != 0.0, ((i, j, ch), (i2, j2, ch2))
    if t >= c:
      assert np.any(jac[t, :t] != 0), (i, j, ch)


def test_no_blind_spot():
  """Every pixel of an 8x8 image sees every earlier pixel (PixelCNN's blind spot
  above-right is gone): the whole strict lower triangle of the Jacobian is nonzero.

  It needs two blocks per scale: with one, odd rows see only ~7 pixels to the left
  and right in the row above and their own (the coarser scales hold only rows
  above an even row), so e.g. (7, 7) misses (7, 0). That is a short receptive
  field, not a blind spot."""
  jac = _jacobian((8, 8, 1), num_resnet=2)
  strict_lower = np.tril(np.ones_like(jac, bool), -1)
  assert np.all(jac[strict_lower] != 0), np.argwhere((jac == 0) & strict_lower)[:10]
  assert np.all(jac[~strict_lower] == 0)


# ------------------------------------------------------- likelihood, loss, dropout


def test_log_likelihood_is_the_sum_of_one_pixel_at_a_time_conditionals():
  """Each pixel's parameters recomputed from an image holding only the earlier
  pixels, its probability by the brute-force formula."""
  shape = (4, 4, 3)
  h, w, _ = shape
  model = _model(shape)
  x = np.asarray(_images(shape))
  partial = np.zeros((h * w, *x.shape), np.uint8)  # [T, B, H, W, C]
  for t in range(h * w):
    partial[t].reshape(2, h * w, -1)[:, :t] = x.reshape(2, h * w, -1)[:, :t]
  mix = _call(lambda m, p: m(pp._to_input(p.reshape(-1, *shape))), model,
              jnp.asarray(partial))
  mix = [np.asarray(a).reshape(h * w, 2, h, w, *a.shape[3:]) for a in mix]
  total = np.zeros(2)
  for t in range(h * w):
    i, j = divmod(t, w)
    for b in range(2):
      total[b] += _np_pixel_log_prob(x[b, i, j], *(a[t, b, i, j] for a in mix))
  batch = {"image": jnp.asarray(x)}
  pixel_testing.check_likelihood_and_loss(pp, model, batch, total, atol=1e-3)


def test_dropout_acts_in_the_loss_only():
  shape = (4, 4, 3)
  model = _model(shape, dropout=0.5)
  batch = {"image": _images(shape)}
  graphdef, state = nnx.split(model)

  @_jit
  def run(state, key):  # (loss with dropout, loss without, log-likelihood) from one key
    m = nnx.merge(graphdef, state)
    return pp.loss(m, batch, key)[0], pp.loss(m, batch, None)[0], pp.log_likelihood(m, batch, key)

  (a, plain, ll_a), (b, _, ll_b) = run(state, jax.random.key(1)), run(state, jax.random.key(2))
  assert a != b and a != plain
  assert a == run(state, jax.random.key(1))[0]  # reproducible
  np.testing.assert_array_equal(ll_a, ll_b)
  np.testing.assert_allclose(plain, -np.mean(ll_a), rtol=1e-6)


# ------------------------------------------------------- sampling


def test_draw_pixel_matches_the_likelihood():
  """50k joint draws of one RGB pixel against the exact marginals of R, G, B and
  of (R, G), from the 256^3 table of the likelihood (coarse bins, total variation)."""
  mix, joint = _joint(1)
  n = 50_000
  batch = jax.tree.map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), mix)
  x = np.asarray(_jit(pp.draw_pixel)(jax.random.key(0), batch))
  assert x.shape == (n, 3) and x.min() >= 0 and x.max() <= 255
  bins = lambda v, m: np.bincount(v // (256 // m), minlength=m) / len(v)
  for c, axes in enumerate([(1, 2), (0, 2), (0, 1)]):
    want = joint.sum(axes).reshape(16, 16).sum(1)
    assert 0.5 * np.abs(bins(x[:, c], 16) - want).sum() < 0.03, c
  want_rg = joint.sum(2).reshape(8, 32, 8, 32).sum((1, 3)).reshape(-1)
  got_rg = np.bincount((x[:, 0] // 32) * 8 + x[:, 1] // 32, minlength=64) / n
  assert 0.5 * np.abs(got_rg - want_rg).sum() < 0.04


def test_sampling_is_jitted_deterministic_and_follows_the_conditionals():
  """Shape, dtype, key determinism; at a tiny temperature each pixel is the rounded
  coupled mean of its most probable component, given the pixels sampled before."""
  shape = (4, 4, 3)
  model = _model(shape, num_scales=1)  # one scale: the scales are checked by cached = naive
  graphdef, state = nnx.split(model)
  run = _jit(lambda s, k, t: pp.sample(nnx.merge(graphdef, s), k, 3, temperature=t))
  x = run(state, jax.random.key(0), 1.0)
  assert x.shape == (3, *shape) and x.dtype == jnp.uint8
  np.testing.assert_array_equal(x, run(state, jax.random.key(0), 1.0))
  assert not np.array_equal(x, run(state, jax.random.key(1), 1.0))
  assert len(np.unique(np.asarray(x))) > 10
  cold = np.asarray(run(state, jax.random.key(0), 1e-6))
  mix = _call(lambda m, v: pp.conditionals(m, v), model, jnp.asarray(cold))
  best = np.argmax(np.asarray(mix.logits), -1)[..., None, None]  # [B, H, W, 1, 1]
  mean = np.take_along_axis(np.asarray(mix.means), best, -1)[..., 0]
  value = (np.clip(mean, -2, 2) + 1) * 127.5
  clear = np.abs(value - np.floor(value) - 0.5) > 0.05  # far from a rounding boundary
  want = np.clip(np.round(value), 0, 255)
  assert clear.mean() > 0.8
  np.testing.assert_array_equal(cold[clear], want[clear])


@pytest.mark.parametrize("shape, kw", [
    ((4, 4, 3), {}),                              # three scales: 4x4, 2x2, 1x1
    ((4, 4, 3), {"num_scales": 1}),
])
def test_cached_sampling_equals_naive_sampling(shape, kw):
  pixel_testing.check_cached_sampling_equals_naive(pp.sample, _model(shape, **kw), 2, 255,
                                                   min_distinct=10)


def test_cached_network_gives_the_full_networks_mixture():
  """Row and pixel passes over a fixed image give the mixture of one full pass."""
  shape = (4, 4, 3)  # three scales: 4x4, 2x2, 1x1
  model = _model(shape)
  x = jnp.asarray(np.random.default_rng(2).integers(0, 256, (2, *shape)), jnp.uint8)
  n = shape[0]
  want = _call(lambda m, v: m(pp._to_input(v)), model, x)  # pylint: disable=protected-access

  def walk(m, v):
    caches, got = pp._init_caches(m, 2), []  # pylint: disable=protected-access
    for i in range(n):
      caches = pp._u_rows(m, caches, i, [s for s in range(3) if i % 2 ** s == 0])  # pylint: disable=protected-access
      for j in range(n):
        active = [s for s in range(3) if i % 2 ** s == 0 and j % 2 ** s == 0]
        mix, caches = pp._ul_pixel(m, caches, i, j, active)  # pylint: disable=protected-access
        caches = pp._write_pixel(m, caches, i, j, v[:, i, j])  # pylint: disable=protected-access
        got.append(mix)
    return jax.tree.map(lambda *a: jnp.stack(a, 1).reshape(2, n, n, *a[0].shape[1:]), *got)

  got = _call(walk, model, x)
  for name in pp.Mixture._fields:
    np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-4,
                               err_msg=name)


# ------------------------------------------------------- errors


def test_bad_configs_and_arguments_are_clear_errors():
  base = dict(name="pixelcnn_pp", input_shape=(8, 8, 1))
  for overrides, message in [
      ({"widht": 3}, "unknown field"),
      ({"likelihood": "categorical"}, "unknown field"),
      ({"input_shape": (6, 6, 1)}, "num_scales=3 halves the image 2 times, so H and W must "
                                   "be divisible by 4"),
      ({"input_shape": (8, 8, 1), "num_scales": 5}, "divisible by 16"),
      ({"num_resnet": 0}, "num_resnet must be an int >= 1"),
      ({"dropout": 1.0}, r"dropout must be a rate in \[0, 1\)"),
      ({"input_shape": (8, 8)}, "input_shape must be"),
  ]:
    with pytest.raises(ValueError, match=message):
      pp.build(ml_collections.ConfigDict({**base, **overrides}), jax.random.key(0))
  model = _model((4, 4, 3))
  with pytest.raises(ValueError, match="method must be one of 'cached', 'naive'"):
    pp.sample(model, jax.random.key(0), 2, method="fast")
  with pytest.raises(ValueError, match="temperature must be > 0"):
    pp.sample(model, jax.random.key(0), 2, temperature=0.0)
  with pytest.raises(ValueError, match=r"shape \(2, 4, 4, 1\)"):
    pp.log_likelihood(model, {"image": jnp.zeros((2, 4, 4, 1), jnp.uint8)})


def test_check_config_wants_8bit_data_and_a_fitting_size():
  from experiments.configs import pixelcnn_pp as configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config("smoke")
  config.model.input_shape = (8, 8, 1)
  pp.check_config(config)
  config.data.view = "binarized"
  with pytest.raises(ValueError, match="set config.data.view='8bit'"):
    pp.check_config(config)
  config.data.view = "8bit"
  config.model.num_scales = 5
  with pytest.raises(ValueError, match="divisible by 16"):
    pp.check_config(config)


def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_likelihood():
  """``dtype="bfloat16"``: the network's products and convolutions are bfloat16; the
  parameters, the logistic mixture's likelihood and the loss float32, close to
  float32's."""
  mixed_precision.check_bfloat16(pp, lambda dtype: _model(num_scales=1, dtype=dtype),
                                 {"image": _images((4, 4, 3))})
