r"""Trains a model, or resumes its run: the main job.

  python -m experiments.main --config=experiments/configs/vae.py:digits \
      --workdir=runs/vae_digits [--config.total_steps=8000 ...]

Re-running with the same --workdir resumes from the newest checkpoint; with
--workdir alone it reuses the run's saved config, to which --config.<key>=<value>
overrides apply (fields that do not define the model, the data or the batch):

  python -m experiments.main --workdir=runs/vae_digits \
      --config.optimizer.learning_rate=3e-4 --config.total_steps=8000
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config: experiments/configs/<name>.py:<variant>",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)


def main(argv):
  del argv
  from genjax import models, rundir  # pylint: disable=g-import-not-at-top
  # a user's mistakes that need no JAX fail before it starts, in a moment
  rundir.check_writable(_WORKDIR.value, "the work directory")
  config = _CONFIG.value or rundir.load_config(_WORKDIR.value)
  models.check_name(config.model.name)
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  try:
    experiment.train(config, _WORKDIR.value)
  except experiment.NonFiniteLossError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  common.run(main)
