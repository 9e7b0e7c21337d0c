"""Checkpointer: round trip, and restores that do not fit the saved state."""

import jax
import jax.numpy as jnp
import numpy as np
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


def test_an_asynchronous_save_survives_the_state_being_donated(tmp_path):
  """`save` returns before the files are written; the training loop then donates
  the state's buffers to the next step. The checkpoint still holds the saved
  values, and reads wait for the write."""
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt")
  state = {"w": jnp.arange(200_000.0).reshape(400, 500), "b": jnp.full((7,), 3.0)}
  want = jax.tree.map(np.asarray, state)
  ckpt.save(1, state, {"position": 1})
  for x in jax.tree.leaves(state):  # as donation to the next step does
    x.delete()
  state = {"w": jnp.zeros((400, 500)), "b": jnp.zeros((7,))}
  ckpt.save(2, state, {"position": 2})
  assert ckpt.all_steps() == [1, 2]
  got, data, step = ckpt.restore(ckpt_lib.abstract_like(want), step=1)
  ckpt.close()
  assert step == 1 and data == {"position": 1}
  for k in want:
    np.testing.assert_array_equal(np.asarray(got[k]), want[k])
