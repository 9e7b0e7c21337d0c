r"""Evaluates the newest checkpoint of a run on the test split; writes eval.json.

  python -m experiments.evaluate --workdir=runs/vae_mnist [--num_samples=5000]
"""

from __future__ import annotations

import json

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 5000,
    "importance samples k for bound-based likelihoods (the VAE's IWAE bound)")
_SPLIT = flags.DEFINE_string("split", "test", "data split")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "examples per batch")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the evaluation's randomness")


def main(argv):
  del argv
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  result = experiment.evaluate(_WORKDIR.value, num_samples=_NUM_SAMPLES.value,
                               split=_SPLIT.value, batch_size=_BATCH_SIZE.value,
                               seed=_SEED.value)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  common.run(main)
