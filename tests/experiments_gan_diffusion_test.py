"""The launchers end to end on the families with their own update and a moving
average of the weights: DCGAN (two players) and diffusion. Train, resume,
evaluate, sample; resuming continues exactly, the moving averages included."""

import functools
import importlib
import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from genjax import experiment
from experiments_test import _rows, _run, _train_and_resume

GAN_CONFIG = "experiments/configs/dcgan.py"


@pytest.fixture(scope="module")
def gan_trained(tmp_path_factory, data_dir):
  """The DCGAN smoke run through the CLI, then resumed to 30 steps."""
  return _train_and_resume(GAN_CONFIG, tmp_path_factory.mktemp("gan_run"), data_dir)


def test_gan_trains_resumes_and_logs_both_players(gan_trained):
  assert "d_loss" in gan_trained.first.stderr and "g_loss" in gan_trained.first.stderr
  assert "from checkpoint step 20" in gan_trained.second.stderr
  train_rows = [r for r in _rows(gan_trained.workdir) if "d_loss" in r]
  assert [r["step"] for r in train_rows] == [5, 10, 15, 20, 25, 30]
  for key in ("g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  assert any("eval/d_real" in r for r in _rows(gan_trained.workdir))
  assert (gan_trained.workdir / "samples" / "step_00000030.png").exists()


def test_gan_evaluate_reports_no_likelihood_and_says_why_no_sample_metrics(
    gan_trained, data_dir):
  proc = _run(["experiments.evaluate", f"--workdir={gan_trained.workdir}"], data_dir)
  out = json.loads((gan_trained.workdir / "eval.json").read_text())
  assert out["likelihood"] is None and "nll_nats" not in out and out["step"] == 30
  assert "feature network for (28, 28, 1) images only" in out["sample_metrics"]
  assert "d_real" in out and '"d_fake"' in proc.stdout


def test_gan_sample_metrics_with_a_given_feature_network(gan_trained):
  from genjax.metrics import classifier  # pylint: disable=g-import-not-at-top
  net = classifier.build(input_shape=(8, 8, 1))  # random features: tests the plumbing
  out = experiment.evaluate(gan_trained.workdir, feature_network=net,
                            num_metric_samples=200)
  assert out["num_metric_samples"] == 200 and out["fid"] > 0
  assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1 and "kid" in out


def test_gan_sample_writes_a_png_grid(gan_trained, data_dir, tmp_path):
  out = tmp_path / "gan.png"
  _run(["experiments.sample", f"--workdir={gan_trained.workdir}", "--num=9",
        f"--out={out}"], data_dir)
  assert out.exists()


def _assert_same_state(straight, resumed):
  """Both run directories' last checkpoints: the same step, equal parameters,
  optimizer states and moving averages."""
  _, m1, _, s1 = experiment.restore_model(straight)
  _, m2, _, s2 = experiment.restore_model(resumed)
  assert s1 == s2
  for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2)),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  return s1


@pytest.mark.parametrize("name", ["dcgan"])
def test_resumed_run_with_a_moving_average_equals_uninterrupted_run(tmp_path, data_dir, name):
  """The GAN's two players, two optimizer states and moving average continue
  exactly (diffusion's moving average: the launcher test below)."""
  family_config = importlib.import_module(f"experiments.configs.{name}")

  config = family_config.get_config("smoke")
  config.data.data_dir = str(data_dir)
  config.total_steps, config.checkpoint_every = 6, 3
  config.eval_every = config.sample_every = 0
  straight, split = tmp_path / "straight", tmp_path / "split"
  experiment.train(config, straight)  # checkpoints at steps 3 and 6
  # the same run killed after its checkpoint at step 3, then relaunched
  shutil.copytree(straight, split)
  shutil.rmtree(split / "checkpoints" / "6")
  experiment.train(config, split)
  assert _assert_same_state(straight, split) == 6


@pytest.mark.slow
@pytest.mark.parametrize("name, overrides, sample_flags", [
    ("diffusion", ["--config.model.num_classes=10"],
     ["--sampler=ddim", "--steps=5"]),
])
def test_smoke_configs_run_through_the_launchers(tmp_path, data_dir, name, overrides,
                                                 sample_flags):
  """Train, evaluate and sample through the CLI (resuming is the same code for
  every family: the VAE's, GAN's, GPT's and diffusion's tests cover it). One pixel
  family, class-conditional: PixelCNN, PixelRNN and PixelCNN++ go through the same
  launcher code; their smoke configs are built by tests/configs_test.py and their
  functions tested in tests/models (their CLI runs, 25 to 110 s of compiling each
  in CI, were left out to keep the suite short). Diffusion, class-conditional, with
  its own sampling flags; and a copy of the run killed after its checkpoint at step
  10, relaunched, ends equal to it, the moving average included."""
  config = f"experiments/configs/{name}.py:smoke"
  run = functools.partial(_run, timeout=300)  # a safety limit, not a speed check
  workdir, split = tmp_path / "run", tmp_path / "split"
  train = ["experiments.main", f"--config={config}", *overrides]
  first = run([*train, f"--workdir={workdir}"], data_dir)
  assert "done at step 20" in first.stderr
  rows = [r for r in _rows(workdir) if "loss" in r]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  assert {"bits_per_dim", "grad_norm"} <= set(rows[0])
  assert ({"prior_bpd", "recon_bpd", "diffusion_bpd", "ema_decay"} if name == "diffusion"
          else {"nll_nats"}) <= set(rows[0])
  assert all(np.isfinite(r["loss"]) for r in rows)
  run(["experiments.evaluate", f"--workdir={workdir}", "--time_samples=2"], data_dir)
  out = json.loads((workdir / "eval.json").read_text())
  assert out["model"] == name and "num_samples" not in out and out["num_time_samples"] == 2
  values = 256 if out["view"] == "8bit" else 2
  if name == "diffusion":  # a bound: after 20 steps still above the uniform's nats
    assert out["likelihood"].startswith("lower bound") and np.isfinite(out["nll_nats"])
  else:
    assert out["likelihood"] == "exact"
    assert 0 < out["nll_nats"] < 64 * np.log(values)  # better than uniform after 20 steps
  grid = workdir / "grid.png"
  # 16 images: the shape the training run compiled (the persistent cache serves it)
  run(["experiments.sample", f"--workdir={workdir}", "--num=16", f"--out={grid}",
       *sample_flags], data_dir)
  assert grid.exists()
  # the same run killed after its checkpoint at step 10, then relaunched (the
  # persistent compilation cache serves the relaunch its programs)
  shutil.copytree(workdir, split, ignore=shutil.ignore_patterns("eval.json", "*.png"))
  shutil.rmtree(split / "checkpoints" / "20")
  resumed = run([*train, f"--workdir={split}"], data_dir)
  assert "from checkpoint step 10" in resumed.stderr
  assert _assert_same_state(workdir, split) == 20
