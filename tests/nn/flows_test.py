"""Tests of the flow layers (genjax/nn/flows.py): inverses, log-dets, ActNorm, densities."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.models import flow
from genjax.nn import conditioner
from genjax.nn import flows

SHAPE = (4, 4, 2)  # a tiny NHWC input: the brute-force Jacobians are 32 x 32
# XLA's backend optimisations halve the compile time of these tiny programs when off.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _rngs(seed: int = 0) -> nnx.Rngs:
  return flow.init_rngs(jax.random.key(seed))


def perturb(module: nnx.Module, seed: int = 0, scale: float = 0.3) -> nnx.Module:
  """Adds N(0, scale^2) noise to every parameter (so zero-initialised layers are not
  trivially the identity); numpy noise keeps the test free of PRNG compilations."""
  rng = np.random.default_rng(seed)
  params = nnx.state(module, nnx.Param)
  noisy = jax.tree.map(
      lambda p: p + scale * jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
  nnx.update(module, noisy)
  return module


def _x(batch: int = 3, shape=SHAPE, seed: int = 1, low: float = 0.02, high: float = 0.98):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(low, high, size=(batch, *shape)), jnp.float32)


class _Fn:
  """Adapts a function pair to the layer interface."""

  def __init__(self, forward, inverse):
    self.forward, self.inverse = forward, inverse


def _split_prior():
  prior = perturb(flows.SplitPrior(SHAPE[-1], rngs=_rngs()))

  def forward(x):
    keep, z, ld = prior.forward(x)
    return jnp.concatenate([keep, z], -1), ld

  return _Fn(forward, lambda y: prior.inverse(y[..., :1], y[..., 1:]))


def _squeeze():
  return _Fn(lambda x: (flows.squeeze(x), jnp.zeros(x.shape[0])), flows.unsqueeze)


def _preprocess(kind):
  return _Fn(functools.partial(flows.preprocess, kind=kind, alpha=0.05),
             functools.partial(flows.postprocess, kind=kind, alpha=0.05))


def _coupling(**kw):
  return perturb(flows.AffineCoupling(SHAPE[-1], hidden=8, num_blocks=1, rngs=_rngs(), **kw))


def _step(**kw):
  return perturb(flows.FlowStep(SHAPE[-1], hidden=8, num_blocks=0, rngs=_rngs(), **kw))


LAYERS = {
    "actnorm": lambda: perturb(flows.ActNorm(SHAPE[-1])),
    "coupling_channel_sigmoid": lambda: _coupling(mask="channel", parity=0, scale="sigmoid"),
    "coupling_channel_tanh_parity1": lambda: _coupling(mask="channel", parity=1, scale="tanh"),
    "coupling_checkerboard_sigmoid": lambda: _coupling(mask="checkerboard", parity=0),
    "coupling_checkerboard_tanh_parity1": lambda: _coupling(mask="checkerboard", parity=1,
                                                            scale="tanh"),
    "coupling_additive": lambda: _coupling(mask="checkerboard", parity=1, coupling="additive"),
    "conv1x1": lambda: perturb(flows.InvertibleConv1x1(SHAPE[-1], rngs=_rngs())),
    "conv1x1_lu": lambda: perturb(flows.InvertibleConv1x1(SHAPE[-1], lu=True, rngs=_rngs())),
    "reverse": lambda: flows.ChannelPermutation(SHAPE[-1], kind="reverse"),
    "shuffle": lambda: flows.ChannelPermutation(SHAPE[-1], kind="shuffle", rngs=_rngs(3)),
    "squeeze": _squeeze,
    "split_prior": _split_prior,
    "logit": lambda: _preprocess("logit"),
    "center": lambda: _preprocess("center"),
    "step_glow": lambda: _step(permutation="conv1x1_lu", mask="channel"),
    "step_realnvp": lambda: _step(permutation="none", mask="checkerboard", scale="tanh"),
    "stack": lambda: perturb(flows.FlowStack(3, SHAPE[-1], hidden=8, num_blocks=0,
                                             rngs=_rngs())),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inverse_and_logdet_match_brute_force(name):
  layer = LAYERS[name]()
  x = _x()
  y, logdet = layer.forward(x)
  assert logdet.shape == (3,)
  np.testing.assert_allclose(layer.inverse(y), x, atol=1e-4)

  def flat(v):
    return layer.forward(v.reshape(1, *SHAPE))[0].reshape(-1)

  jac = _jit(jax.jacrev(flat))(x[0].reshape(-1))
  np.testing.assert_allclose(logdet[0], jnp.linalg.slogdet(jac)[1], atol=1e-3, rtol=1e-5)


def test_perturbed_layers_are_not_the_identity():
  for name in ("coupling_channel_sigmoid", "coupling_checkerboard_sigmoid", "split_prior"):
    x = _x()
    y, logdet = LAYERS[name]().forward(x)
    assert float(jnp.abs(y - x).max()) > 1e-2 and float(jnp.abs(logdet).max()) > 1e-2, name


def test_zero_initialised_couplings_and_priors_start_as_the_identity():
  x = _x()
  for kw in (dict(mask="channel", scale="sigmoid"), dict(mask="checkerboard", scale="tanh")):
    y, logdet = flows.AffineCoupling(2, hidden=8, rngs=_rngs(), **kw).forward(x)
    np.testing.assert_allclose(y, x, atol=1e-6)
    np.testing.assert_allclose(logdet, 0.0, atol=1e-6)
  keep, z, logdet = flows.SplitPrior(2, rngs=_rngs()).forward(x)
  np.testing.assert_allclose(jnp.concatenate([keep, z], -1), x)
  np.testing.assert_allclose(logdet, 0.0)


def test_conv_same_matches_lax_convolution_and_its_gradients():
  rng = np.random.default_rng(0)
  for k, c_in, c_out in ((1, 3, 4), (3, 3, 4), (3, 8, 1), (3, 1, 8)):  # both gradient paths
    x = jnp.asarray(rng.normal(size=(2, 5, 5, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)), jnp.float32)
    np.testing.assert_allclose(conditioner.conv_same(x, kernel), conditioner._conv(x, kernel), atol=1e-5)
    loss = lambda conv: lambda v, w: jnp.sum(jnp.sin(conv(v, w)))  # noqa: E731
    mine = jax.grad(loss(conditioner.conv_same), (0, 1))(x, kernel)
    reference = jax.grad(loss(conditioner._conv), (0, 1))(x, kernel)
    for a, b in zip(mine, reference):
      np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_forward_mode_through_a_coupling_is_a_clear_error_on_cpu_or_works_when_switched(
    monkeypatch):
  """The custom-VJP convolution is a CPU-only speed-up: forward mode through it is
  JAX's custom-VJP error there; with the switch off (the plain convolution, as on
  GPUs and TPUs) jax.jvp works and agrees with reverse mode."""
  from genjax.nn import dense  # pylint: disable=g-import-not-at-top
  coupling = flows.AffineCoupling(2, hidden=8, rngs=_rngs(), mask="channel", scale="sigmoid")
  # non-zero weights, so that the conditioner's output depends on its input
  graphdef, state = nnx.split(coupling)
  rng = np.random.default_rng(1)
  state = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(np.float32), state)
  coupling = nnx.merge(graphdef, state)
  x = _x()
  f = lambda v: coupling.forward(v)[0]  # noqa: E731
  tangent = jnp.ones_like(x)
  if jax.default_backend() == "cpu":
    with pytest.raises(TypeError, match="custom_vjp"):
      jax.jvp(f, (x,), (tangent,))
  monkeypatch.setattr(dense, "CPU_CUSTOM_GRADIENTS", False)
  _, forward = jax.jvp(f, (x,), (tangent,))
  _, pullback = jax.vjp(f, x)
  # <J t, u> == <t, J^T u> for a random u
  u = jnp.asarray(rng.normal(size=forward.shape), jnp.float32)
  np.testing.assert_allclose(jnp.vdot(forward, u), jnp.vdot(tangent, pullback(u)[0]),
                             rtol=1e-4)
  assert float(jnp.abs(forward - tangent).max()) > 1e-3  # the coupling acted on it


def test_lu_conv1x1_equals_plain_conv1x1_for_the_same_weight():
  w = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
  plain = flows.InvertibleConv1x1(4, weight=w)
  lu = flows.InvertibleConv1x1(4, lu=True, weight=w)
  np.testing.assert_allclose(lu.weight_matrix(), w, atol=1e-5)
  x = _x(shape=(3, 3, 4))
  (y_plain, ld_plain), (y_lu, ld_lu) = plain.forward(x), lu.forward(x)
  np.testing.assert_allclose(y_lu, y_plain, atol=1e-5)
  np.testing.assert_allclose(ld_lu, ld_plain, atol=1e-4)
  np.testing.assert_allclose(ld_plain, 9 * np.linalg.slogdet(w)[1], atol=1e-4)
  np.testing.assert_allclose(lu.inverse(y_lu), x, atol=1e-4)


def test_actnorm_initialises_to_zero_mean_unit_variance_once():
  x = _x(batch=8, shape=(3, 3, 2)) * jnp.array([3.0, 0.2]) + jnp.array([-1.0, 5.0])
  norm = flows.ActNorm(2)
  norm.initialize(x)
  y, _ = norm.forward(x)
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-4)
  assert bool(norm.initialized[...])
  before = jax.tree.map(np.asarray, nnx.state(norm))
  norm.initialize(x * 10.0 + 3.0)  # already initialised: a no-op
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, nnx.state(norm)))


def test_stack_initialises_each_step_on_its_own_input():
  stack = perturb(flows.FlowStack(3, 2, hidden=8, num_blocks=0, rngs=_rngs()))
  x = _x(batch=6, shape=(3, 3, 2)) * 4.0 - 1.0
  stack.forward(x, initialize=True)
  for k in range(3):
    step = stack.step(k)
    y, _ = step.layers[0].forward(x)  # the step's ActNorm on its own input
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-3)
    x = step.forward(x)[0]


def test_stacked_steps_have_distinct_parameters():
  stack = flows.FlowStack(3, 4, permutation="shuffle", hidden=8, rngs=_rngs())
  kernels = nnx.state(stack.steps, nnx.Param)["layers"][2]["net"]["conv_in"]["kernel"][...]
  assert kernels.shape[0] == 3 and not np.allclose(kernels[0], kernels[1])


def test_two_dimensional_flow_density_integrates_to_one():
  # Points in R^2 as 1x1 images with 2 channels: couplings with channel masks.
  stack = perturb(flows.FlowStack(3, 2, permutation="conv1x1_lu", hidden=8, num_blocks=0,
                                  scale="tanh", rngs=_rngs()), scale=0.2)
  n, half = 561, 14.0
  grid = np.linspace(-half, half, n, dtype=np.float32)
  xy = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 1, 1, 2)
  z, logdet = _jit(lambda v: stack.forward(v))(jnp.asarray(xy))
  log_p = flow.log_prob([z], logdet)
  cell = (grid[1] - grid[0]) ** 2
  total = float(jnp.sum(jnp.exp(log_p)) * cell)
  assert abs(total - 1.0) < 0.01, total


def test_preprocess_logit_logdet_by_hand():
  x = np.array([[[[0.0]], [[0.5]]]], np.float32).reshape(1, 2, 1, 1)
  y, logdet = flows.preprocess(jnp.asarray(x), "logit", alpha=0.05)
  p = 0.05 + 0.9 * x.astype(np.float64)
  np.testing.assert_allclose(y, np.log(p / (1 - p)), rtol=1e-6)
  np.testing.assert_allclose(logdet, np.sum(np.log(0.9 / (p * (1 - p)))), rtol=1e-6)


def test_squeeze_rejects_odd_sides():
  with pytest.raises(ValueError, match="divisible by 2"):
    flows.squeeze(jnp.zeros((1, 6, 5, 1)))
