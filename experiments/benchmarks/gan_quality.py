r"""Sample quality of DCGAN on MNIST for several seeds, the VAE, and the data floor.

  python -m experiments.benchmarks.gan_quality --workdir=runs/gan_quality \
      --minutes=60 [--seeds=0,1,2] [--vae_workdir=runs/vae_mnist] \
      [--config=experiments/configs/dcgan.py:mnist --config.x=y ...]

For each seed, trains the config (default ``dcgan.py:mnist``) in
``WORKDIR/seed_<s>`` for ``--minutes`` of this machine's time (the step count is
calibrated once from the compiled step's measured time, or set with
``--steps``; re-running keeps a run's calibrated step count, so a finished run is
not retrained and an interrupted one resumes; so seeds can train in parallel
processes, ``--seeds=0 --nofloor`` and ``--seeds=1 --nofloor``, and a last call
with all seeds then only evaluates), notes whether it diverged (stopped on a
non-finite loss), then reports FID, KID, precision and recall
(`genjax.metrics`, the genjax MNIST classifier's features) of
``--num_metric_samples`` samples of the moving-average generator against the
test set. Beside them: the same metrics for the VAE run in ``--vae_workdir``
(its samples, against the test set in its own view, e.g. binarized) and, as the
floor, for MNIST training images against the test images, in both views. Prints
a Markdown table and writes ``WORKDIR/results.json``. A smoke-sized check:

  python -m experiments.benchmarks.gan_quality --workdir=/tmp/gq --steps=10 \
      --seeds=0 --num_metric_samples=500 \
      --config=experiments/configs/dcgan.py:smoke --config.data.name=mnist
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import flags
from ml_collections import config_flags

from experiments import common
from experiments.benchmarks import measure


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _CONFIG, _WORKDIR, _SEEDS, _MINUTES, _STEPS, _VAE, _NUM, _FLOOR
  _CONFIG = config_flags.DEFINE_config_file(
      "config", "experiments/configs/dcgan.py:mnist", "the GAN's experiment config",
      lock_config=False)
  _WORKDIR = flags.DEFINE_string("workdir", None, "root of the runs", required=True)
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "training seeds")
  _MINUTES = flags.DEFINE_float("minutes", 60.0, "training minutes per seed")
  _STEPS = flags.DEFINE_integer("steps", 0, "train steps per seed (overrides --minutes)")
  _VAE = flags.DEFINE_string("vae_workdir", None, "a trained VAE run on MNIST to compare")
  _NUM = flags.DEFINE_integer("num_metric_samples", 10_000, "samples per metric")
  _FLOOR = flags.DEFINE_bool("floor", True, "also measure MNIST train against test (the "
                             "floor); --nofloor when training seeds in parallel processes")


def _model_quality(workdir, num: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import experiment, metrics  # pylint: disable=g-import-not-at-top
  family, model, config, step = experiment.restore_model(workdir)
  view = config.data.view
  out = metrics.models.evaluate_samples(
      family, model, measure.mnist_images(config, view), num=num, key=jax.random.key(0),
      binary=view == "binarized", data_dir=config.data.data_dir or None,
      mnist_dir=config.data.mnist_dir or None)
  return {"model": config.model.name, "view": view, "step": step, **out}


def _floor(config, view: str, num: int) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import metrics  # pylint: disable=g-import-not-at-top
  kw = dict(data_dir=config.data.data_dir or None, mnist_dir=config.data.mnist_dir or None)
  test = measure.mnist_images(config, view)[:num]
  train = measure.mnist_images(config, view, "train")
  train = train[np.random.default_rng(0).permutation(len(train))[:len(test)]]
  if view == "binarized":
    train, test = train * np.uint8(255), test * np.uint8(255)
  out = metrics.sample_metrics(train, test, **kw)
  return {"model": "MNIST train vs test (floor)", "view": view, **out,
          "num_metric_samples": len(test)}


def main(argv):
  del argv
  import ml_collections  # pylint: disable=g-import-not-at-top
  from genjax import experiment, rundir  # pylint: disable=g-import-not-at-top
  common.setup()
  root = pathlib.Path(_WORKDIR.value)
  root.mkdir(parents=True, exist_ok=True)
  base = experiment.prepare_config(_CONFIG.value)
  if base.data.name != "mnist":
    raise ValueError("the sample metrics need MNIST: set --config.data.name=mnist")
  rows = []
  for seed in map(int, _SEEDS.value):
    config = ml_collections.ConfigDict(base.to_dict())
    config.seed = seed
    workdir = root / f"seed_{seed}"
    step_s = float("nan")
    if _STEPS.value:
      config.total_steps = _STEPS.value
    elif (workdir / "config.json").exists():  # resume with the steps calibrated before
      config.total_steps = experiment.load_config(workdir).total_steps
    else:
      config.total_steps, step_s = measure.calibrated_steps(config, _MINUTES.value)
    t0 = time.time()
    diverged = None
    try:
      experiment.train(config, workdir)
    except experiment.NonFiniteLossError as e:
      diverged = str(e)
    train_rows = [r for r in rundir.read_metrics(workdir, "train") if "wall_seconds" in r]
    wall = train_rows[-1]["wall_seconds"] if train_rows else time.time() - t0
    row = {**_model_quality(workdir, _NUM.value), "seed": seed,
           "train_minutes": wall / 60, "calibrated_step_seconds": step_s,
           "diverged": diverged or False}
    rows.append(row)
    print(json.dumps(row), flush=True)
  if _VAE.value:
    rows.append({**_model_quality(_VAE.value, _NUM.value), "seed": None})
  for view in ("8bit", "binarized") if _FLOOR.value else ():
    rows.append(_floor(base, view, _NUM.value))
  (root / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
  print("\n| model | view | seed | steps | train min | FID | KID | precision | recall "
        "| n | diverged |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
  for r in rows:
    minutes = r.get("train_minutes")
    print(f"| {r['model']} | {r['view']} | {r.get('seed', '')} | {r.get('step', '')} | "
          f"{'' if minutes is None else f'{minutes:.1f}'} | {r['fid']:.2f} | "
          f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
          f"{r['num_metric_samples']} | {'yes' if r.get('diverged') else 'no'} |")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
