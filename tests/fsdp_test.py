"""Parameters and optimizer state split over the ``fsdp`` mesh axis: on 8 fake CPU
devices (a 2 x 4 mesh, in a process of its own) a train step equals the replicated
step, and orbax restores the split state onto other meshes (tests/fsdp_scenario.py)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from genjax import train

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  out = tmp_path_factory.mktemp("fsdp")
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run([sys.executable, "tests/fsdp_scenario.py", str(out)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads((out / "result.json").read_text())


def test_split_step_equals_replicated_step(result):
  assert result["num_sharded"] >= 8  # the large kernels, embeddings and Adam moments
  assert all(f == 0.25 for f in result["shard_fraction"])  # a quarter on each device
  assert result["split_bytes_per_device"] < 0.5 * result["full_bytes"]
  assert result["step_loss_diff"] < 1e-5
  assert result["step_state_diff"] < 1e-5


@pytest.mark.parametrize("mesh", ["mesh_4x2", "one_device"])
def test_split_checkpoint_restores_onto_another_mesh(result, mesh):
  got = result["restored"][mesh]
  assert got["placed"]  # on the requested mesh, split as the rule says for it
  assert got["restore_diff"] == 0.0
  if mesh == "mesh_4x2":  # and it trains on there as on the mesh it was saved from
    assert got["continued_loss_diff"] < 1e-5 and got["continued_diff"] < 1e-5


def test_fsdp_rule():
  """One rule: large leaves split along their largest divisible axis (never a
  stacked layer axis); small leaves and fsdp=1 replicated."""
  P = jax.sharding.PartitionSpec
  assert train.fsdp_spec(("model", "head", "kernel"), (64, 256), 4) == P(None, "fsdp")
  assert train.fsdp_spec(("model", "blocks", "w"), (8, 64, 128), 4) == P(None, None, "fsdp")
  assert train.fsdp_spec(("model", "w"), (512, 64), 4) == P("fsdp")
  assert train.fsdp_spec(("model", "w"), (30, 512), 4) == P(None, "fsdp")
  assert train.fsdp_spec(("model", "b"), (64,), 4) == P()  # small
  assert train.fsdp_spec(("model", "w"), (64, 256), 1) == P()
  assert train.fsdp_spec(("model", "w"), (63, 129), 4) == P()  # nothing divisible


def test_fsdp_that_does_not_divide_the_devices_is_a_clear_error():
  with pytest.raises(ValueError, match="must divide the 4 devices; set it to one of 1, 2, 4"):
    train.make_mesh(fsdp=3)


def test_the_run_mesh_comes_from_config_mesh_fsdp():
  """``--config.mesh.fsdp=N`` shapes the launchers' mesh; runs saved before the
  ``mesh`` block existed get plain data parallelism."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"mesh": {"fsdp": 2}})
  assert dict(experiment.make_run_mesh(config).shape) == {"data": 2, "fsdp": 2}
  assert dict(experiment.make_run_mesh(ml_collections.ConfigDict()).shape) == {
      "data": 4, "fsdp": 1}
