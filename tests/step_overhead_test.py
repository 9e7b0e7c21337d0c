"""The bare train step of the overhead benchmark makes the library step's update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import step_overhead
from experiments.configs import dcgan
from experiments.configs import vae
from genjax import experiment
from genjax import models


def test_bare_step_updates_like_the_library_step():
  setup = experiment.compile_setup(vae.get_config("smoke"), jax.devices()[:1])
  bare = step_overhead.make_bare_step(setup.family, setup.graphdef)
  before = [np.asarray(a) for a in jax.tree.leaves(setup.state)]
  copy = jax.tree.map(jnp.copy, setup.state)  # each step donates its own
  state_lib, metrics_lib = setup.step(setup.state, setup.batch, setup.key)
  state_bare, metrics_bare = bare(copy, setup.batch, setup.key)
  np.testing.assert_allclose(metrics_bare["loss"], metrics_lib["loss"], rtol=1e-6)
  lib, bar = jax.tree.leaves(state_lib), jax.tree.leaves(state_bare)
  assert len(lib) == len(bar) == len(before)
  for a, b in zip(lib, bar):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7)
  changed = sum(not np.array_equal(x, np.asarray(a)) for x, a in zip(before, lib))
  assert changed > len(lib) // 2  # parameters, moments and the step counter moved


def test_bare_step_refuses_a_family_with_its_own_update():
  with pytest.raises(ValueError, match="own update"):
    step_overhead.make_bare_step(models.get(dcgan.get_config("smoke").model.name), None)
