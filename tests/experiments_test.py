"""The launchers end to end on the smoke variant: train, resume, evaluate, sample,
inspect, the non-finite stop, SIGTERM, and the errors users meet."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from genjax import experiment
from genjax import models
from genjax import rundir

REPO = pathlib.Path(__file__).resolve().parents[1]
VAE_CONFIG = "experiments/configs/vae.py"


def _env(data_dir, **extra):
  env = dict(os.environ)
  env["GENJAX_DATA_DIR"] = str(data_dir)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  env.pop("GENJAX_TRACEBACK", None)
  env.update(extra)
  return env


def _run(args, data_dir, check=True, timeout=240, cwd=REPO):
  proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=_env(data_dir),
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  return proc


def _assert_one_line_error(proc, pattern):
  """The launcher failed, printed no traceback, and its last line is
  ``error: ...`` matching ``pattern``."""
  assert proc.returncode != 0, proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), proc.stderr
  assert re.search(pattern, last), last
  return last


def _smoke_config(data_dir, **overrides):
  from experiments.configs import vae  # pylint: disable=g-import-not-at-top
  config = vae.get_config("smoke")
  config.data.data_dir = str(data_dir)
  for k, v in overrides.items():
    node = config
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return config


def _rows(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _train_and_resume(config_path, workdir, data_dir):
  """The smoke variant through the CLI, then resumed to 30 steps through the CLI."""
  first = _run(["experiments.main", f"--config={config_path}:smoke",
                f"--workdir={workdir}"], data_dir)
  second = _run(["experiments.main", f"--config={config_path}:smoke",
                 f"--workdir={workdir}", "--config.total_steps=30"], data_dir)
  return types.SimpleNamespace(workdir=workdir, first=first, second=second)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  """One smoke run through the CLI, then resumed to 30 steps through the CLI."""
  return _train_and_resume(VAE_CONFIG, tmp_path_factory.mktemp("run"), data_dir)


def test_train_writes_metrics_samples_checkpoints_and_events(trained):
  w = trained.workdir
  rows = _rows(w)
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows][:4] == [5, 10, 15, 20]
  assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train_rows)
  assert {"param_norm", "examples_per_sec", "elbo", "kl"} <= set(train_rows[0])
  assert any("eval/nll_nats" in r for r in rows)
  assert sorted(p.name for p in (w / "samples").glob("step_*.png"))[:2] == [
      "step_00000010.png", "step_00000020.png"]
  assert list((w / "tb").glob("events.out.tfevents.*"))
  assert json.loads((w / "config.json").read_text())["model"]["input_shape"] == [8, 8, 1]
  assert "ETA" in trained.first.stderr and "steps/s" in trained.first.stderr


def test_resume_continues_the_step_count(trained):
  assert "resuming" in trained.second.stderr and "from checkpoint step 20" in trained.second.stderr
  steps = [r["step"] for r in _rows(trained.workdir) if "loss" in r]
  assert steps == [5, 10, 15, 20, 25, 30]
  assert (trained.workdir / "checkpoints" / "30").exists()


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_run(tmp_path, data_dir):
  """10 steps + resume to 20 gives exactly the parameters of 20 straight steps:
  step count, randomness and data order all continue."""
  straight, split = tmp_path / "straight", tmp_path / "split"
  # (a constant schedule: a decaying one depends on total_steps by design)
  constant = {"optimizer.schedule": "constant"}
  experiment.train(_smoke_config(data_dir, **constant), straight)
  experiment.train(_smoke_config(data_dir, total_steps=10, **constant), split)
  experiment.train(_smoke_config(data_dir, total_steps=20, **constant), split)
  _, m1, _, s1 = experiment.restore_model(straight)
  _, m2, _, s2 = experiment.restore_model(split)
  assert s1 == s2 == 20
  for a, b in zip(jax.tree.leaves(nnx.state(m1)), jax.tree.leaves(nnx.state(m2))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_evaluate_writes_eval_json(trained, data_dir):
  """Of an older checkpoint (``--step``); an absent step names the saved ones."""
  proc = _run(["experiments.evaluate", f"--workdir={trained.workdir}",
               "--num_samples=8", "--step=20"], data_dir)
  out = json.loads((trained.workdir / "eval.json").read_text())
  assert out["num_examples"] == 300 and out["num_samples"] == 8 and out["step"] == 20
  assert "num_time_samples" not in out  # diffusion's argument only
  assert 0 < out["nll_nats"] < 64 * np.log(2) * 1.5
  assert out["bits_per_dim"] == pytest.approx(out["nll_nats"] / (64 * np.log(2)))
  # the IWAE bound (k=8) is at least as tight as the ELBO on average
  assert -out["nll_nats"] >= out["elbo"] - 0.5
  assert "binarization" in out and '"nll_nats"' in proc.stdout
  with pytest.raises(FileNotFoundError, match="no checkpoint at step 7 .* steps 10, 20, 30"):
    experiment.restore_model(trained.workdir, step=7)


def test_sample_writes_png_grids(trained, data_dir, tmp_path):
  out = tmp_path / "grid.png"
  proc = _run(["experiments.sample", f"--workdir={trained.workdir}", "--num=9",
               f"--out={out}"], data_dir)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(out).size[0] > 8 * 3
  assert (tmp_path / "grid_reconstructions.png").exists()
  assert str(out) in proc.stdout


def test_inspect_prints_costs_and_dumps_ir(data_dir, tmp_path):
  proc = _run(["experiments.inspect", f"--config={VAE_CONFIG}:smoke",
               f"--dump_dir={tmp_path}", "--time_steps=3", f"--json={tmp_path}/n.json"],
              data_dir)
  for word in ("parameters", "FLOPs / call", "compile time", "memory", "examples/s"):
    assert word in proc.stdout, proc.stdout
  for name in ("train_step.jaxpr.txt", "train_step.stablehlo.mlir", "train_step.hlo.txt"):
    assert (tmp_path / name).stat().st_size > 100
  numbers = json.loads((tmp_path / "n.json").read_text())
  assert numbers["flops"] > 0 and numbers["examples_per_second"] > 0


def test_inspect_function_works_on_any_jitted_function(tmp_path):
  from genjax import inspection  # pylint: disable=g-import-not-at-top
  f = jax.jit(lambda a, b: a @ b)
  x = jnp.ones((32, 64))
  report = inspection.inspect_jitted(f, x, x.T, dump_dir=tmp_path, name="mm")
  assert report.flops == pytest.approx(2 * 32 * 64 * 32, rel=0.1)
  assert (tmp_path / "mm.hlo.txt").exists() and report.compile_seconds > 0
  with pytest.raises(TypeError, match="jax.jit"):
    inspection.inspect_jitted(lambda a: a, x)


def _nan_family():
  """The VAE, with a loss that turns NaN from its 13th call on."""
  vae = models.get("vae")

  class Counter(nnx.Variable):
    pass

  def build(config, key):
    config = ml_collections.ConfigDict(config.to_dict())
    config.name = "vae"
    model = vae.build(config, key)
    model.calls = Counter(jnp.zeros((), jnp.int32))
    return model

  def loss(model, batch, key):
    value, metrics = vae.loss(model, batch, key)
    model.calls.value = model.calls.value + 1
    return jnp.where(model.calls.value > 12, jnp.nan, value), metrics

  mod = types.ModuleType("genjax_test_nan_family")
  mod.__dict__.update({k: getattr(vae, k) for k in dir(vae) if not k.startswith("_")})
  mod.build, mod.loss = build, loss
  return mod


def test_non_finite_loss_stops_with_the_step_and_the_last_good_checkpoint(
    tmp_path, data_dir, monkeypatch):
  monkeypatch.setitem(sys.modules, "genjax_test_nan_family", _nan_family())
  monkeypatch.setitem(models._REGISTRY, "nanvae", "genjax_test_nan_family")  # pylint: disable=protected-access
  config = _smoke_config(data_dir, total_steps=20)
  config.model.name = "nanvae"
  with pytest.raises(experiment.NonFiniteLossError,
                     match=r"step 13 .*newest good checkpoint is step 10") as err:
    experiment.train(config, tmp_path)
  # the relaunch reuses the saved config: the message says so and how to override it
  assert (f"--workdir={tmp_path} alone reuses its config.json "
          "(optimizer.learning_rate=0.001" in str(err.value))
  assert "--config.optimizer.learning_rate=0.0001" in str(err.value)
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == [10]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_dir):
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.main", f"--config={VAE_CONFIG}:smoke",
       f"--workdir={tmp_path}", "--config.total_steps=1000000", "--config.log_every=1",
       "--config.eval_every=0", "--config.sample_every=0",
       "--config.checkpoint_every=1000000"],
      cwd=REPO, env=_env(data_dir), stderr=subprocess.PIPE, text=True)
  lines = []
  deadline = time.time() + 180
  for line in proc.stderr:
    lines.append(line)
    if line.startswith("step 3/"):
      proc.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, "".join(lines)
  rest = proc.stderr.read()
  assert proc.wait(timeout=120) == 0, "".join(lines) + rest
  assert "SIGTERM received; saved checkpoint at step" in rest
  saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and saved[0] >= 3


@pytest.mark.slow
def test_a_kill_during_an_asynchronous_save_keeps_the_newest_complete_checkpoint(
    tmp_path, data_dir):
  """A checkpoint every step, each written in the background while the next steps
  run, and kill -9 at step 12: the relaunch restores the newest complete checkpoint
  and finishes the run. (A save is in flight almost all the time here: the kill
  left ``11.orbax-checkpoint-tmp`` beside 8, 9 and 10 in 3 of 3 trials by hand.)"""
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.main", f"--config={VAE_CONFIG}:smoke",
       f"--workdir={tmp_path}", "--config.total_steps=1000000", "--config.log_every=1",
       "--config.checkpoint_every=1", "--config.eval_every=0", "--config.sample_every=0"],
      cwd=REPO, env=_env(data_dir), stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stderr:
      if line.startswith("step 12/"):
        break
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  # orbax writes into a temporary directory and renames it when complete
  complete = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert complete and max(complete) >= 8, complete
  proc = _run(["experiments.main", f"--workdir={tmp_path}", "--config.total_steps=20"],
              data_dir)
  assert f"from checkpoint step {max(complete)}" in proc.stderr, proc.stderr
  assert "done at step 20" in proc.stderr


def test_bad_config_gets_a_one_line_error(tmp_path, data_dir):
  """One launch shows the one-line form (tests/cli_test.py has more, mistyped keys
  among them); the checks behind the other messages run in-process, as the
  launcher runs them (`genjax.rundir.prepare_config`)."""
  proc = _run(["experiments.main", f"--config={VAE_CONFIG}:smoke",
               f"--workdir={tmp_path}", "--config.model.name=vea"], data_dir, check=False)
  _assert_one_line_error(proc, "unknown model 'vea'; known models: .*vae")
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field, value, message", [
    ("data.name", "cifar", "unknown dataset 'cifar'; known datasets: digits, mnist"),  # KeyError
    ("model.input_shape", (28, 28, 1), "does not match the digits data"),
    ("data.view", "8bit", "likelihood='bernoulli' models binarized images"),
])
def test_bad_config_is_refused_before_anything_runs(data_dir, field, value, message):
  c = _smoke_config(data_dir, **{field: value})
  with pytest.raises((ValueError, KeyError), match=message):
    rundir.prepare_config(c)


def test_changed_model_config_is_refused_on_resume(trained, data_dir):
  proc = _run(["experiments.main", f"--config={VAE_CONFIG}:smoke",
               f"--workdir={trained.workdir}", "--config.model.latent_dim=7"],
              data_dir, check=False)
  _assert_one_line_error(proc, "cannot change: model: saved .*'latent_dim': 4.*Use a new --workdir")


def test_evaluate_checks_that_it_can_write_eval_json_before_evaluating(
    trained, tmp_path, data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(trained.workdir, workdir)
  (workdir / "eval.json").unlink(missing_ok=True)
  (workdir / "eval.json").mkdir()  # an unwritable destination, also for root
  proc = _run(["experiments.evaluate", f"--workdir={workdir}", "--num_samples=8"],
              data_dir, check=False)
  _assert_one_line_error(proc, re.escape(f"output {workdir}/eval.json is a directory"))
  assert "evaluating" not in proc.stderr and "eval batch" not in proc.stderr


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="needs Linux /proc")
def test_sample_checks_num_and_out_before_sampling(trained, tmp_path, data_dir):
  """--num is checked before anything is read; an --out that cannot be written
  (nothing can be created in /proc) before sampling."""
  proc = _run(["experiments.sample", f"--workdir={tmp_path}", "--num=0"], data_dir,
              check=False)
  _assert_one_line_error(proc, r"samples \(--num, num=\) must be a positive integer, "
                               r"got 0$")
  proc = _run(["experiments.sample", f"--workdir={trained.workdir}", "--num=4",
               "--out=/proc/genjax_test/grid.png"], data_dir, check=False)
  _assert_one_line_error(proc, "cannot write --out /proc/genjax_test/grid.png: creating "
                               "a file in /proc failed")
  for num in (0, -3, 2.5):  # library users get the same check
    with pytest.raises(ValueError, match=rf"\(--num, num=\) .* got {num}$"):
      experiment.sample(trained.workdir, num=num)


def test_step_rate_leaves_out_evaluation_time_and_metrics_are_fetched_late(
    tmp_path, data_dir, monkeypatch):
  """A slow evaluation at step 10 does not lower the step rate of the window
  after it (the rate and ETA of the next progress line). The host fetches a
  logging interval's metrics one interval late (it never waits for the step it
  has just queued), except before an evaluation, a checkpoint or the end."""
  pause = 1.0
  evaluate_model = experiment.evaluate_model

  def slow_evaluate_model(*args, **kwargs):
    time.sleep(pause)
    return evaluate_model(*args, **kwargs)

  queued, fetches = [0], []  # fetches: (steps queued, steps fetched) at each fetch
  compile_train_step, device_get = experiment.train_lib.compile_train_step, jax.device_get

  def counting_compile(*args, **kwargs):
    step = compile_train_step(*args, **kwargs)
    def counted(*a):
      queued[0] += 1
      return step(*a)
    return counted

  def spy(tree):
    if isinstance(tree, list) and tree and isinstance(tree[0], dict):  # step metrics
      fetches.append((queued[0], (fetches[-1][1] if fetches else 0) + len(tree)))
    return device_get(tree)

  monkeypatch.setattr(experiment, "evaluate_model", slow_evaluate_model)
  monkeypatch.setattr(experiment.train_lib, "compile_train_step", counting_compile)
  monkeypatch.setattr(jax, "device_get", spy)
  # no checkpoint at step 10: its asynchronous write would share the CPU with steps 11-15
  experiment.train(_smoke_config(data_dir, sample_every=0, checkpoint_every=20), tmp_path)
  rows = [r for r in _rows(tmp_path) if "loss" in r]
  rates = {r["step"]: r["steps_per_sec"] for r in rows}
  # charged the pause, steps 11-15 would run at under 5 / pause steps/s
  assert rates[15] > 3 * 5 / pause, rates
  # log steps 5, 10, 15, 20; evaluation at 10, checkpoint at 20: at step 10 the host
  # fetched steps 2-5 (row 5) first, at step 20 steps 11-15 (row 15) first
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  assert (10, 5) in fetches and (20, 15) in fetches, fetches
  assert fetches[-1] == (20, 20)


def test_checkpoint_of_another_model_gets_a_clear_error_and_no_config(
    trained, tmp_path, data_dir):
  """Checkpoints without their config.json (copied, or the file deleted) that a
  different model wrote: the restore fails with the fix, and no config.json claims
  the directory for the new model."""
  shutil.copytree(trained.workdir / "checkpoints", tmp_path / "checkpoints")
  proc = _run(["experiments.main", f"--config={VAE_CONFIG}:smoke",
               f"--workdir={tmp_path}", "--config.model.latent_dim=7"],
              data_dir, check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert "does not fit the model and optimizer" in proc.stderr, proc.stderr
  assert "saved (" in proc.stderr and ", now (" in proc.stderr  # the differing shapes
  assert "new --workdir" in proc.stderr
  assert not (tmp_path / "config.json").exists()


def test_evaluate_without_a_run_is_a_clear_error(tmp_path, data_dir):
  proc = _run(["experiments.evaluate", f"--workdir={tmp_path}"], data_dir, check=False)
  assert proc.returncode != 0 and "holds no genjax run" in proc.stderr


def test_the_static_test_binarization_does_not_depend_on_the_run_seed(data_dir):
  """Runs with different seeds are scored on the same binarized test set."""
  from genjax.data import run_data  # pylint: disable=g-import-not-at-top
  firsts = []
  for seed in (0, 7):
    config = _smoke_config(data_dir, seed=seed)
    assert config.data.view == "binarized"
    data = run_data.for_config(config)
    firsts.append(next(iter(experiment._eval_batches(data, config)))["image"])  # pylint: disable=protected-access
  np.testing.assert_array_equal(firsts[0], firsts[1])
  # while the seed does change a draw: the binarization is random, not thresholded
  other = next(iter(run_data.for_config(config).eval_batches("test", 8, 1)))["image"]
  assert not np.array_equal(np.asarray(other), np.asarray(firsts[0][:8]))
