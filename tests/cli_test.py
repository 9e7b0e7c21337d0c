"""The launchers as a user runs them: every bad input ends in one line, ``error:
...`` (no traceback), and no failed or killed launch leaves a work directory
that the next command cannot use."""

import json
import pathlib
import re
import signal
import subprocess
import sys

import pytest

from genjax import rundir
from experiments_test import REPO, VAE_CONFIG, _assert_one_line_error, _env, _rows, _run

MAIN = "experiments.main"


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.lr=1e-3", r"--config.optimizer.lr: config.optimizer has no key "
     r"'lr'; the closest keys are config.optimizer.learning_rate, "),
    ("--config.nope=1", r"--config.nope: config has no key 'nope'; the closest keys are "
     r"config\.\w+, config\.\w+, config\.\w+$"),
    ("--config.model.nope=1", r"config.model has no key 'nope'; the closest keys are "
     r"config.model.name, "),
    ("--config.modle.x=3", r"config has no key 'modle'; the closest keys are config.model, "),
])
def test_mistyped_config_key_names_the_closest_keys(tmp_path, data_dir, override, message):
  proc = _run([MAIN, f"--config={VAE_CONFIG}:smoke", f"--workdir={tmp_path}", override],
              data_dir, check=False)
  _assert_one_line_error(proc, message)
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, message, elsewhere", [
    (["--config=experiments/configs/nope.py:smoke"],
     r"the config file experiments/configs/nope.py does not exist \(in .*\); pass "
     r"--config=experiments/configs/<name>.py:<variant> with <name> one of .*vae", False),
    (["--config=experiments/configs/nope.py"], r"does not exist \(in .* nor in "
     + str(REPO), True),
    ([f"--config={VAE_CONFIG}:nope"], r"^error: unknown variant 'nope' of vae; choose one "
     "of smoke, digits", True),
    (["--config.total_steps=3"], r"--config.total_steps overrides a config, but none is "
     r"given: pass --config=", False),
])
def test_config_file_variant_and_missing_config_errors(tmp_path, data_dir, args, message,
                                                       elsewhere):
  """Also when launched from outside the repository (relative config paths)."""
  proc = _run([MAIN, *args, f"--workdir={tmp_path / 'run'}"], data_dir, check=False,
              cwd=tmp_path if elsewhere else REPO)
  _assert_one_line_error(proc, message)
  assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unwritable_work_directory(tmp_path, data_dir, kind):
  if kind == "file":
    workdir = tmp_path / "run"
    workdir.write_text("")
    message = f"the work directory {workdir} is a file, not a directory"
  else:
    workdir = pathlib.Path("/proc/genjax_test_run")  # nothing can be created there
    message = f"cannot write the work directory {workdir}: creating a file in /proc failed"
  proc = _run([MAIN, f"--config={VAE_CONFIG}:smoke", f"--workdir={workdir}"], data_dir,
              check=False)
  _assert_one_line_error(proc, message)
  if kind == "file":
    proc = _run(["experiments.evaluate", f"--workdir={workdir}"], data_dir, check=False)
    _assert_one_line_error(proc, f"{workdir} is a file, not a run directory")


def _train_rows(workdir):
  return [r["step"] for r in _rows(workdir) if "loss" in r]


def _eval_rows(workdir):
  return [r["step"] for r in _rows(workdir) if "eval/nll_nats" in r]


def _kill_after(args, data_dir, line_start):
  """Launches ``args`` and kill -9s it once it prints a line starting so."""
  proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=_env(data_dir),
                          stderr=subprocess.PIPE, text=True)
  try:
    for line in proc.stderr:
      if line.startswith(line_start):
        break
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.slow
def test_a_work_directory_survives_failed_finished_killed_and_diverged_launches(
    tmp_path, data_dir):
  """A user's sequence of commands on one work directory (6 launches)."""
  workdir = tmp_path / "run"
  smoke = f"--config={VAE_CONFIG}:smoke"
  # 1. a start that fails after the set-up (18 is not divisible by the 4 devices)
  proc = _run([MAIN, smoke, f"--workdir={workdir}", "--config.batch_size=18"], data_dir,
              check=False)
  _assert_one_line_error(proc, "global batch size 18 is not divisible by the 4 devices")
  assert not (workdir / "config.json").exists()
  # 2. the corrected command works, also from outside the repository
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  proc = _run([MAIN, smoke, f"--workdir={workdir}"], data_dir, cwd=elsewhere)
  assert "done at step 20" in proc.stderr
  assert json.loads((workdir / "config.json").read_text())["batch_size"] == 16
  # 3. launching the finished run again does nothing and logs nothing
  before = (workdir / "metrics.jsonl").read_text()
  proc = _run([MAIN, smoke, f"--workdir={workdir}"], data_dir)
  assert "is finished (step 20, total_steps 20); nothing to do" in proc.stderr
  assert (workdir / "metrics.jsonl").read_text() == before
  # 4. continued through --workdir alone, a row per step and no checkpoint, then
  # killed: rows past the checkpoint at 20 stay behind
  _kill_after([MAIN, f"--workdir={workdir}", "--config.log_every=1",
               "--config.total_steps=1000000", "--config.checkpoint_every=1000000",
               "--config.eval_every=0", "--config.sample_every=0"], data_dir, "step 25/")
  assert max(r["step"] for r in rundir.read_metrics(workdir)) >= 25
  # 5. continued with a diverging learning rate: stopped, the rows past 20 dropped
  proc = _run([MAIN, f"--workdir={workdir}", "--config.total_steps=30",
               "--config.optimizer.learning_rate=1e30"], data_dir, check=False)
  w = re.escape(str(workdir))
  _assert_one_line_error(
      proc, r"non-finite loss .* newest good checkpoint is step 20 .* A relaunch with "
      rf"--workdir={w} alone reuses its config.json \(optimizer.learning_rate=1e\+30"
      rf".*python -m experiments.main --workdir={w} "
      r"--config.optimizer.learning_rate=0.001")
  assert _train_rows(workdir) == [5, 10, 15, 20]
  # 6. the command the message suggests resumes from step 20 and saves the new rate
  proc = _run([MAIN, f"--workdir={workdir}", "--config.optimizer.learning_rate=0.001"],
              data_dir)
  assert "from checkpoint step 20" in proc.stderr and "done at step 30" in proc.stderr
  config = json.loads((workdir / "config.json").read_text())
  assert config["optimizer"]["learning_rate"] == 0.001 and config["total_steps"] == 30
  assert _train_rows(workdir) == [5, 10, 15, 20, *range(21, 31)]  # each step once
  assert _eval_rows(workdir) == [10, 20, 30]


# Runs a launcher as `python -m` does, then says on stdout whether JAX was imported.
_JAX_IMPORTED = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
  print("jax imported:", "jax" in sys.modules)
"""


def test_mistakes_that_need_no_jax_fail_before_jax_starts(tmp_path, data_dir):
  """No run, a file for a run, an unknown model, a flag of another kind of run, a bad
  --num or --out, an unwritable eval.json: one line in well under a second of
  work, since JAX (seconds to import) is not imported."""
  run = tmp_path / "text_run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(
      {"model": {"name": "gpt"}, "data": {"name": "counting"}}))
  (run / "eval.json").mkdir()
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  cases = [
      ([MAIN, f"--workdir={tmp_path / 'none'}"], "holds no genjax run"),
      ([MAIN, f"--config={VAE_CONFIG}:smoke", f"--workdir={a_file}"],
       "is a file, not a directory"),
      ([MAIN, f"--config={VAE_CONFIG}:smoke", f"--workdir={tmp_path / 'new'}",
        "--config.model.name=vea"], "unknown model 'vea'"),
      (["experiments.evaluate", f"--workdir={a_file}"], "is a file, not a run directory"),
      (["experiments.evaluate", f"--workdir={run}"], "eval.json is a directory"),
      (["experiments.sample", f"--workdir={run}", "--noextras"], "apply to image runs only"),
      (["experiments.sample", f"--workdir={run}", "--num=0"], "must be a positive integer"),
      (["experiments.sample", f"--workdir={run}", f"--out={run}"], "is a directory"),
  ]
  for args, message in cases:
    proc = subprocess.run([sys.executable, "-c", _JAX_IMPORTED, *args], cwd=REPO,
                          env=_env(data_dir), capture_output=True, text=True, timeout=60)
    _assert_one_line_error(proc, message)
    assert proc.stdout.strip().splitlines()[-1] == "jax imported: False", (args, proc.stdout)
  assert not (tmp_path / "new").exists()
