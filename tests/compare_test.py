"""The comparison of every family (experiments.benchmarks.compare): runs, resumes, tables.

Smoke-sized models on real MNIST for a few steps, with a random (untrained)
feature network, so the numbers mean nothing: the test checks the pipeline
(rows, units, resume, outputs), not the comparison's results.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from experiments.benchmarks import compare
from genjax import metrics


@pytest.fixture(scope="module")
def env(data_dir):
  mnist_dir = os.environ.get("GENJAX_MNIST_DIR")
  if not mnist_dir or not os.path.isdir(mnist_dir):
    pytest.skip("GENJAX_MNIST_DIR is unset or not a directory: no real MNIST to test.")
  old = os.environ.get("GENJAX_DATA_DIR")
  os.environ["GENJAX_DATA_DIR"] = str(data_dir)
  yield
  if old is None:
    os.environ.pop("GENJAX_DATA_DIR", None)
  else:
    os.environ["GENJAX_DATA_DIR"] = old


def _run(root, families, logs, **kw):
  return compare.compare(
      root, families, budget_minutes=0.0, gan_seeds=(0, 1), smoke=True, steps=4,
      num_metric_samples=64, feature_network=metrics.classifier.build(key=jax.random.key(3)),
      speed_calls=(1, 1), log=logs.append, **kw)


@pytest.mark.slow  # about 75 s: three short training runs and their evaluations
def test_compare_trains_evaluates_resumes_and_writes_the_table(env, tmp_path):
  del env
  logs = []
  out = _run(tmp_path, ["vae", "dcgan"], logs)
  by_family = {r["family"]: r for r in out["families"]}
  assert list(by_family) == ["vae", "dcgan"]
  assert [r["family"] for r in out["runs"]] == ["vae", "dcgan", "dcgan"]
  for r in out["runs"]:
    assert r["step"] == r["total_steps"] == 4
    assert r["params"] > 0 and r["examples_per_sec"] > 0
    assert r["num_metric_samples"] == 64
    assert np.isfinite(r["fid"]) and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    assert r["images_per_sec_batch1"] > 0 and r["images_per_sec_batch64"] > 0
    samples = np.load(tmp_path / r["run"] / "samples.npy")
    assert samples.shape == (compare.GRID, 28, 28, 1) and samples.dtype == np.uint8
  # Likelihoods: the VAE's bound from its launcher's test evaluation and a learning
  # curve; none for the GAN (the labels of every family: test_every_family_...).
  assert 0 < by_family["vae"]["test_bits_per_dim"] < 9
  assert by_family["vae"]["curve"] and by_family["vae"]["curve"][-1][1] > 0
  assert "test_bits_per_dim" not in by_family["dcgan"]
  gan = by_family["dcgan"]
  assert gan["num_seeds"] == 2 and gan["num_diverged"] == 0
  fids = [r["fid"] for r in out["runs"] if r["family"] == "dcgan"]
  assert fids[0] != fids[1]  # two seeds, two models
  assert gan["fid"] == pytest.approx(np.mean(fids))
  assert gan["fid_sd"] == pytest.approx(np.std(fids, ddof=1))
  assert any("comparison ETA" in line and "[1/3] vae" in line for line in logs)

  table = (tmp_path / "compare.md").read_text()
  assert "| vae |" in table and "bound (ELBO)" in table and "dcgan (2 seeds, 0 diverged)" in table
  assert "min wall, load " in table.splitlines()[0]
  saved = json.loads((tmp_path / "compare.json").read_text())
  assert saved["families"] == json.loads(json.dumps(out["families"]))
  for name in ("fid_vs_speed.png", "learning_curves.png", "samples.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # Resume: finished runs are neither trained nor evaluated again; a subset works.
  stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("**/checkpoints/*")}
  logs.clear()
  again = _run(tmp_path, ["dcgan"], logs)
  assert [r["fid"] for r in again["runs"]] == [r["fid"] for r in out["runs"][1:]]
  assert sum("already done" in line for line in logs) == 2
  assert not any("ETA" in line for line in logs)
  assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("**/checkpoints/*")} == stamps


def test_unknown_family_is_a_clear_error_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="unknown family 'gpt2'.*choose from vae"):
    compare.compare(tmp_path / "c", ["vae", "gpt2"], budget_minutes=1.0)
  assert not (tmp_path / "c" / "vae").exists()


def test_every_family_config_is_8bit_mnist():
  for name in compare.FAMILIES:
    for smoke in (False, True):
      c = compare.family_config(name, smoke=smoke)
      assert (c.data.name, c.data.view) == ("mnist", "8bit")
      assert c.model.get("likelihood", "categorical") != "bernoulli"
      assert c.eval_every == 0
  kinds = {name: compare._likelihood_kind({"family": name}) for name in compare.FAMILIES}
  assert kinds == {"vae": "bound (ELBO)", "realnvp": "exact (dequantised)",
                   "glow": "exact (dequantised)", "pixelcnn": "exact", "gated_pixelcnn": "exact",
                   "pixelcnn_pp": "exact", "pixelrnn": "exact", "dcgan": "none (implicit model)",
                   "diffusion": "bound (VDM)"}


def _row(family, seed=0, fid=100.0, diverged=False, trained="2026-12-08 02:00", **kw):
  return {"family": family, "seed": seed, "run": f"{family}/seed_{seed}", "params": 10,
          "step": 5, "examples_per_sec": 2.0, "fid": fid, "kid": 1.0, "precision": 0.5,
          "recall": 0.5, "images_per_sec_batch1": 1.0, "images_per_sec_batch64": 2.0,
          "train_minutes": 1.0, "diverged": diverged, "trained": trained,
          "host": "cpu, 2 cores", "load_average": [0.5, 1.5], **kw}


def test_seeds_become_mean_spread_and_divergence_count_and_calls_are_listed():
  """The table's arithmetic, without training: the GAN's seeds, and each run's
  conditions when the rows come from calls on different days."""
  rows = [_row("vae", test_bits_per_dim=1.5),
          _row("dcgan", 0, fid=10.0), _row("dcgan", 1, fid=14.0, diverged="loss nan"),
          _row("dcgan", 2, fid=18.0, trained="2026-12-09 03:00")]
  summary = compare.summarize(rows)
  assert [r["family"] for r in summary] == ["vae", "dcgan"]
  gan = summary[1]
  assert (gan["num_seeds"], gan["num_diverged"]) == (3, 1)
  assert gan["fid"] == pytest.approx(14.0) and gan["fid_sd"] == pytest.approx(4.0)
  assert summary[0]["num_seeds"] == 1 and "fid_sd" not in summary[0]
  meta = {"budget_minutes": 60, "device": "cpu", "host": "cpu, 2 cores",
          "num_metric_samples": 10_000, "written": "2026-12-09 04:00", "run_minutes": 240,
          "wall_minutes": 61, "load_average": [1.0, 2.0]}
  table = compare.markdown(summary, meta, rows)
  assert "| dcgan (3 seeds, 1 diverged) | 10 | 5 |" in table
  assert "| 14.0 ± 4.0 |" in table and "| 1.5000 | bound (ELBO) |" in table
  assert "dcgan/seed_2 on 2026-12-09 03:00 (cpu, 2 cores, load 0.5 to 1.5)" in table
  # one call's rows: the header's conditions suffice
  assert "several calls" not in compare.markdown(summary, meta, rows[:3])
