"""The generic compiled train step: sharding, non-finite guard, optimizers, retracing."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from genjax import models
from genjax import train


class _Toy(nnx.Module):
  """Linear regression of the label on the image: a family-shaped toy."""

  def __init__(self, d, key):
    self.input_shape = (2, 2, 1)
    self.linear = nnx.Linear(d, 1, rngs=nnx.Rngs(key))


def _toy_family(nan=False):
  def build(config, key):
    return _Toy(4, key)

  def loss(model, batch, key):
    x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255
    noise = 0.01 * jax.random.normal(key, (x.shape[0], 1))
    err = model.linear(x) + noise - batch["label"][:, None].astype(jnp.float32)
    value = jnp.mean(err ** 2)
    if nan:
      value = value * jnp.nan
    return value, {"mse": value}

  return types.SimpleNamespace(build=build, loss=loss)


def _opt_config(**kw):
  c = ml_collections.ConfigDict(dict(name="adam", learning_rate=1e-2, schedule="constant",
                                     warmup_steps=0, grad_clip_norm=1.0))
  c.update(kw)
  return c


def _batch(n=8, shape=(2, 2, 1), seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
          "label": rng.integers(0, 10, (n,), dtype=np.int32)}


def _run_steps(family, mesh, batches, num_steps=3, config=None, opt=None):
  ts = train.create_train_state(family, config, opt or _opt_config(), 100,
                                jax.random.key(0))
  graphdef, state = nnx.split(ts)
  state = train.replicate(state, mesh)
  step = train.compile_train_step(family, graphdef, mesh)
  key = jax.random.key(1)
  out = []
  for i in range(num_steps):
    state, metrics = step(state, train.shard_batch(batches[i % len(batches)], mesh), key)
    out.append(jax.device_get(metrics))
  return jax.device_get(nnx.state(nnx.merge(graphdef, state))), out


def _assert_trees_close(a, b, atol):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=atol)


def test_four_fake_devices_are_available():
  assert len(jax.devices()) >= 4, "tests/conftest.py sets JAX_NUM_CPU_DEVICES=4"


@pytest.mark.parametrize("family_name", ["toy", "vae", "dcgan", "diffusion"])
def test_sharded_step_equals_single_device_step(family_name):
  if family_name == "toy":
    family, config, batches = _toy_family(), None, [_batch(8, seed=s) for s in range(3)]
  elif family_name == "dcgan":  # two players, two optimizers, two discriminator steps
    family = models.get("dcgan")
    config = ml_collections.ConfigDict(dict(
        name="dcgan", input_shape=(2, 2, 1), latent_dim=4, g_channels=(8,),
        d_channels=(8,), d_steps=2, loss="wgan_gp", num_classes=10))
    batches = [_batch(8, seed=s) for s in range(3)]
  elif family_name == "diffusion":  # the VDM bound, labels, the EMA
    family = models.get("diffusion")
    config = ml_collections.ConfigDict(dict(
        name="diffusion", input_shape=(2, 2, 1), channels=4, channel_mults=(1,),
        attention_resolutions=(), num_groups=2, num_classes=10, ema_decay=0.5,
        ema_warmup=False))
    batches = [_batch(8, seed=s) for s in range(3)]
  else:
    family = models.get("vae")
    config = ml_collections.ConfigDict(dict(
        name="vae", input_shape=(8, 8, 1), likelihood="bernoulli", architecture="mlp",
        hidden=(16,), latent_dim=4))
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 2, (8, 8, 8, 1), dtype=np.uint8),
                "label": np.zeros(8, np.int32)} for _ in range(3)]
  one = train.make_mesh(jax.devices()[:1])
  four = train.make_mesh(jax.devices()[:4])
  state1, m1 = _run_steps(family, one, batches, config=config)
  state4, m4 = _run_steps(family, four, batches, config=config)
  # (Adam divides by the gradients' scale: where a gradient is near zero, a summation
  # order that differs between one and four devices moves the update by up to ~1e-4
  # x lr; the GroupNorms and the learned schedule of diffusion have such entries)
  _assert_trees_close(state1, state4, atol=1e-4 if family_name == "diffusion" else 1e-5)
  for a, b in zip(m1, m4):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-5)


def test_batch_is_really_sharded():
  mesh = train.make_mesh(jax.devices()[:4])
  batch = train.shard_batch(_batch(8), mesh)
  shards = batch["image"].addressable_shards
  assert len(shards) == 4 and all(s.data.shape[0] == 2 for s in shards)


def test_indivisible_batch_gets_a_clear_error():
  mesh = train.make_mesh(jax.devices()[:4])
  with pytest.raises(ValueError, match="multiple of 4"):
    train.shard_batch(_batch(6), mesh)


def test_step_metrics_and_learning():
  mesh = train.make_mesh(jax.devices()[:1])
  _, metrics = _run_steps(_toy_family(), mesh, [_batch(8)], num_steps=40,
                          opt=_opt_config(learning_rate=0.3))
  for k in ("loss", "mse", "grad_norm", "param_norm", "update_norm", "finite"):
    assert k in metrics[0]
  assert metrics[0]["finite"] == 1.0 and metrics[0]["grad_norm"] > 0
  # Adam's first step moves every parameter by about the learning rate
  num_params = 4 + 1
  assert metrics[0]["update_norm"] == pytest.approx(0.3 * np.sqrt(num_params), rel=0.05)
  assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]


def test_non_finite_step_leaves_the_state_unchanged():
  family = _toy_family(nan=True)
  ts = train.create_train_state(family, None, _opt_config(), 10, jax.random.key(0))
  graphdef, state = nnx.split(ts)
  before = jax.tree.map(lambda x: np.array(x, copy=True), state)  # state is donated
  step = train.compile_train_step(family, graphdef)
  after, metrics = step(state, _batch(8), jax.random.key(1))
  assert float(metrics["finite"]) == 0.0
  _assert_trees_close(before, jax.device_get(after), atol=0)


def test_second_call_does_not_retrace():
  family = _toy_family()
  traces = []
  loss = family.loss
  family.loss = lambda *a: (traces.append(1), loss(*a))[1]
  ts = train.create_train_state(family, None, _opt_config(), 10, jax.random.key(0))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(family, graphdef)
  for i in range(3):
    state, _ = step(state, _batch(8, seed=i), jax.random.key(1))
  assert len(traces) == 1


def test_step_counter_and_key_folding():
  """The step key is fold_in(key, step): two steps with the same key differ."""
  family = _toy_family()
  keys = []
  loss = family.loss

  def spy(model, batch, key):
    jax.debug.callback(lambda k: keys.append(np.asarray(k)), jax.random.key_data(key))
    return loss(model, batch, key)

  family.loss = spy
  ts = train.create_train_state(family, None, _opt_config(), 10, jax.random.key(0))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(family, graphdef)
  for _ in range(2):
    state, _ = step(state, _batch(8), jax.random.key(1))
  jax.effects_barrier()
  assert int(nnx.merge(graphdef, state).step.value) == 2
  assert not np.array_equal(keys[0], keys[1])
  np.testing.assert_array_equal(
      keys[1], jax.random.key_data(jax.random.fold_in(jax.random.key(1), 1)))


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedules(schedule):
  sched = train.make_schedule(_opt_config(schedule=schedule, warmup_steps=10), 100)
  assert float(sched(10)) == pytest.approx(1e-2, rel=1e-4)
  if schedule != "constant":
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-6)
    assert float(sched(0)) == pytest.approx(0.0, abs=1e-9)


def test_unknown_optimizer_and_schedule_are_clear_errors():
  with pytest.raises(ValueError, match="adam, adamw or sgd"):
    train.make_tx(_opt_config(name="lamb"), 10)
  with pytest.raises(ValueError, match="constant, cosine or linear"):
    train.make_tx(_opt_config(schedule="exp"), 10)


def test_gradient_clipping_is_applied():
  tx = train.make_tx(_opt_config(name="sgd", grad_clip_norm=1.0, learning_rate=1.0), 10)
  params = {"w": jnp.zeros(3)}
  updates, _ = tx.update({"w": jnp.array([30.0, 40.0, 0.0])}, tx.init(params), params)
  assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_unknown_model_lists_known_ones():
  with pytest.raises(KeyError, match="known models: .*vae"):
    models.get("vea")
