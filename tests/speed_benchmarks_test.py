"""The speed benchmarks compare equals: the bare train step makes the library step's
update, the tap-skipping convolutions compute the masked layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments.benchmarks import masked_conv_speed
from experiments.benchmarks import step_overhead
from experiments.configs import dcgan
from experiments.configs import gpt
from experiments.configs import vae
from genjax import experiment
from genjax import train
from genjax.nn import masked


@pytest.mark.parametrize("config", [vae.get_config("smoke"), dcgan.get_config("smoke")],
                         ids=["vae", "dcgan"])
def test_bare_step_updates_like_the_library_step(config):
  setup = experiment.compile_setup(config, jax.devices()[:1])
  before = [np.asarray(a) for a in jax.tree.leaves(setup.state)]
  copy = jax.tree.map(jnp.copy, setup.state)  # each step donates its own
  bare = step_overhead.compile_bare_step(setup.family, setup.graphdef, copy, setup.batch,
                                         setup.key)
  state_lib, metrics_lib = setup.step(setup.state, setup.batch, setup.key)
  state_bare, metrics_bare = bare(copy, setup.batch, setup.key)
  assert float(metrics_lib["grad_norm" if "grad_norm" in metrics_lib else "d_grad_norm"]) > 0
  assert all(float(v) == 0 for k, v in metrics_bare.items() if "norm" in k)  # no norms
  for name in ("loss", "d_loss"):
    if name in metrics_lib:
      np.testing.assert_allclose(metrics_bare[name], metrics_lib[name], rtol=1e-6)
  lib, bar = jax.tree.leaves(state_lib), jax.tree.leaves(state_bare)
  assert len(lib) == len(bar) == len(before)
  for a, b in zip(lib, bar):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
  changed = sum(not np.array_equal(x, np.asarray(a)) for x, a in zip(before, lib))
  assert changed > len(lib) // 2  # parameters, moments and the step counter moved
  assert train.global_norm({"a": jnp.ones(4)}) == 2  # the library's own again


def test_tap_skipping_convolutions_equal_the_masked_layer_and_its_gradients():
  layer = masked.causal(6, 5, 3, "B", rngs=nnx.Rngs(0))
  kernel = layer.kernel[...] * layer.mask()
  x = jax.random.normal(jax.random.key(1), (2, 5, 4, 6))
  cotangent = jax.random.normal(jax.random.key(2), (2, 5, 4, 5))
  y, vjp = jax.vjp(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), ((1, 0), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")), x, kernel)
  np.testing.assert_allclose(layer(x), y, atol=1e-5)  # the reference is the layer
  dx, dk = vjp(cotangent)
  for name, conv in masked_conv_speed.skipping_convs().items():
    y2, vjp2 = jax.vjp(conv, x, kernel)
    dx2, dk2 = vjp2(cotangent)
    np.testing.assert_allclose(y2, y, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(dx2, dx, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(dk2 * layer.mask(), dk * layer.mask(), atol=1e-5,
                               err_msg=name)


def test_compile_setup_with_a_batch_reads_no_data(tmp_path):
  """vs_pytorch's GPT: the text directory does not exist, the vocabulary is given."""
  config = gpt.get_config("shakespeare_char")
  config.model.update(vocab_size=11, block_size=8, num_layers=1, num_heads=2, width=16)
  config.data.text_dir = str(tmp_path / "absent")
  batch = {"tokens": np.random.default_rng(0).integers(0, 11, (4, 9), dtype=np.int32)}
  setup = experiment.compile_setup(config, jax.devices()[:1], batch=batch)
  assert setup.config.model.vocab_size == 11
  np.testing.assert_array_equal(np.asarray(setup.batch["tokens"]), batch["tokens"])
  _, metrics = setup.step(setup.state, setup.batch, setup.key)
  assert np.isfinite(float(metrics["loss"]))
  with pytest.raises(FileNotFoundError, match="absent"):  # without it, the text is read
    experiment.compile_setup(config, jax.devices()[:1])
