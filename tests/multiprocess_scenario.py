"""One scenario run by every process of a multi-process test (not a test module).

  python -m experiments.multiprocess --num_processes=2 -- \
      tests/multiprocess_scenario.py OUT_DIR DATA_DIR

For the VAE, Glow (ActNorm's data-dependent initialisation; one level) and DCGAN
smoke configs, with a constant learning rate: train 2 steps, resume to 4, evaluate
and sample, each in
``OUT_DIR/<family>``; and each process writes the first training batch it reads
to ``OUT_DIR/batch_<process>.npz``. tests/multiprocess_test.py runs the same
`run` in one process and compares.
"""

from __future__ import annotations

import importlib
import pathlib
import sys

FAMILIES = ("vae", "glow", "dcgan")


def config(name: str, data_dir: str, total_steps: int):
  """The smoke config of ``name``, shrunk to a few steps."""
  c = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  c.data.data_dir = data_dir
  c.update(total_steps=total_steps, log_every=1, eval_every=0, checkpoint_every=2,
           sample_every=0, num_samples=4, eval_batch_size=128)
  # a schedule that does not depend on total_steps: the resumed launch's train step
  # is then the same program, served by the persistent compilation cache
  c.optimizer.schedule = "constant"
  if name == "glow":  # one level halves its compiling; ActNorm's initialisation stays
    c.model.num_levels = 1
  return c


def run(out_dir: str | pathlib.Path, data_dir: str) -> None:
  """The scenario; every process of a run calls it with the same arguments."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  from genjax.data import run_data  # pylint: disable=g-import-not-at-top
  out_dir = pathlib.Path(out_dir)
  for name in FAMILIES:
    workdir = out_dir / name
    experiment.train(config(name, data_dir, 2), workdir)
    experiment.train(config(name, data_dir, 4), workdir)  # resumes from step 2
    experiment.evaluate(workdir, num_samples=4)
    experiment.sample(workdir, num=4)
  c = config("vae", data_dir, 4)
  data = run_data.for_config(experiment.prepare_config(c))
  batch = next(data.train_iterator(c.batch_size // jax.process_count(), c.seed))
  np.savez(out_dir / f"batch_{jax.process_index()}.npz", **batch)


if __name__ == "__main__":
  from experiments import common  # pylint: disable=g-import-not-at-top
  common.setup()
  run(sys.argv[1], sys.argv[2])
