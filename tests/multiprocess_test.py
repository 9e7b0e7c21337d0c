"""Two JAX processes on this machine (2 CPU devices each, gloo collectives) against
one process with the same 4 devices: the VAE, Glow and DCGAN trained, resumed,
evaluated and sampled through ``python -m experiments.multiprocess``
(tests/multiprocess_scenario.py), once for every check below."""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

import multiprocess_scenario as scenario  # tests/multiprocess_scenario.py
from genjax import experiment

REPO = pathlib.Path(__file__).resolve().parents[1]
# an end-to-end scenario of 30 s or more: handed out first (tests/conftest.py)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
  """``(multi, single)``: the scenario's directories from 2 processes and from 1."""
  multi, single = tmp_path_factory.mktemp("multi"), tmp_path_factory.mktemp("single")
  env = {**os.environ, "GENJAX_DATA_DIR": str(data_dir)}
  env.pop("JAX_NUM_CPU_DEVICES", None)  # the launcher gives each process its own
  t0 = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.multiprocess", "--num_processes=2",
       "--devices_per_process=2", "--timeout=600", "--",
       "tests/multiprocess_scenario.py", str(multi), str(data_dir)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=660)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
  print(f"2 processes: {time.time() - t0:.1f} s")
  assert len(jax.devices()) == 4  # tests/conftest.py: the same 4 devices in one process
  scenario.run(single, str(data_dir))
  return multi, single, proc


def _leaves(workdir):
  _, model, _, step = experiment.restore_model(workdir)
  return step, jax.tree.leaves(nnx.state(model))


@pytest.mark.parametrize("name", scenario.FAMILIES)
def test_parameters_equal_the_single_process_run(runs, name):
  """Restored here, in one process on another mesh, from a checkpoint that two
  processes wrote."""
  multi, single, _ = runs
  (s1, a), (s2, b) = _leaves(multi / name), _leaves(single / name)
  assert s1 == s2 == 4 and len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", scenario.FAMILIES)
def test_eval_json_equals_the_single_process_one(runs, name):
  multi, single, _ = runs
  a, b = (json.loads((d / name / "eval.json").read_text()) for d in (multi, single))
  assert a.keys() == b.keys()
  for k in a.keys() - {"seconds", "device"}:
    if isinstance(a[k], float):
      assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), k
    else:
      assert a[k] == b[k], k
  assert a["num_examples"] == 300  # every test example once, the padding of the last batch not


@pytest.mark.parametrize("name", scenario.FAMILIES)
def test_one_copy_of_each_output_file(runs, name):
  """Only process 0 writes config.json, metrics.jsonl, events, PNGs and eval.json."""
  multi, single, proc = runs
  files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()
                           and "checkpoints" not in p.parts and "tb" not in p.parts)
  assert files(multi / name) == files(single / name)
  assert "eval.json" in files(multi / name)
  assert ({p.name for p in (multi / name / "checkpoints").iterdir()}
          == {p.name for p in (single / name / "checkpoints").iterdir()} == {"2", "4"})
  rows = [json.loads(l) for l in (multi / name / "metrics.jsonl").read_text().splitlines()]
  kinds = [(r["step"], any(k.startswith("eval/") for k in r)) for r in rows]
  assert sorted(kinds) == [(1, False), (2, False), (2, True), (3, False), (4, False),
                           (4, True)]  # once each: no second writer
  assert (len(list((multi / name / "tb").iterdir()))
          == len(list((single / name / "tb").iterdir())) == 2)  # one per launch
  assert "[1] genjax: new run" not in proc.stderr  # process 1 prints no progress


def test_hosts_read_disjoint_rows_of_the_same_global_batch(runs):
  multi, single, _ = runs
  hosts = [np.load(multi / f"batch_{i}.npz") for i in range(2)]
  one = np.load(single / "batch_0.npz")
  for key in ("image", "label"):
    np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts]), one[key])
  rows = [{im.tobytes() for im in h["image"]} for h in hosts]
  assert len(rows[0]) == len(hosts[0]["image"]) and not rows[0] & rows[1]
