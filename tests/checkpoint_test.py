"""Checkpointer: round trip, and restores that do not fit the saved state."""

import jax.numpy as jnp
import pytest

from genjax import checkpoint as ckpt_lib


@pytest.fixture
def saved(tmp_path):
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt")
  ckpt.save(5, {"a": jnp.arange(3.0), "layers": [jnp.ones((2, 2))]}, {"position": 7})
  yield ckpt
  ckpt.close()


def test_round_trip(saved):
  state, data, step = saved.restore(ckpt_lib.abstract_like(
      {"a": jnp.zeros(3), "layers": [jnp.zeros((2, 2))]}))
  assert step == 5 and data == {"position": 7}
  assert jnp.array_equal(state["a"], jnp.arange(3.0))
  assert jnp.array_equal(state["layers"][0], jnp.ones((2, 2)))


@pytest.mark.parametrize("wanted, message", [
    ({"a": jnp.zeros(4), "layers": [jnp.zeros((2, 2))]}, r"a: saved \(3,\), now \(4,\)"),
    ({"a": jnp.zeros(3), "layers": [jnp.zeros((2, 2))], "b": jnp.zeros(1)},
     "b: not in the checkpoint"),
    ({"a": jnp.zeros(3)}, "layers/0: only in the checkpoint"),
])
def test_a_state_that_does_not_fit_names_the_entries(saved, wanted, message):
  with pytest.raises(ValueError, match=message) as err:
    saved.restore(ckpt_lib.abstract_like(wanted))
  assert "use a new --workdir" in str(err.value)
