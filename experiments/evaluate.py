r"""Evaluates the newest checkpoint of a run on the test split; writes eval.json.

  python -m experiments.evaluate --workdir=runs/vae_mnist [--num_samples=5000] \
      [--sample_metrics] [--num_metric_samples=10000]

Reports the test log-likelihood where the family has one (not for a GAN), and
FID, KID, precision and recall of model samples against the test split
(genjax.metrics) where genjax has a feature network for the data's shape
(28x28x1, MNIST); for other data (the 8x8 digits) eval.json says why they are
absent. --nosample_metrics skips them; --sample_metrics on digits is an error.
"""

from __future__ import annotations

import json

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)
_NUM_SAMPLES = flags.DEFINE_integer(
    "num_samples", 5000,
    "importance samples k for bound-based likelihoods (the VAE's IWAE bound)")
_TIME_SAMPLES = flags.DEFINE_integer(
    "time_samples", 1, "Monte-Carlo draws of the time per example for diffusion's "
    "bound (more: a smaller spread, proportionally slower)", lower_bound=1)
_STEP = flags.DEFINE_integer("step", None, "the checkpoint to evaluate (default: newest)")
_SPLIT = flags.DEFINE_string("split", "test", "data split")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "examples per batch")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the evaluation's randomness")
_SAMPLE_METRICS = flags.DEFINE_bool(
    "sample_metrics", None,
    "FID/KID/precision/recall of samples (default: where a feature network exists "
    "for the data's shape, i.e. MNIST)")
_NUM_METRIC_SAMPLES = flags.DEFINE_integer(
    "num_metric_samples", 10_000, "samples drawn for the sample metrics")


def main(argv):
  del argv
  import pathlib  # pylint: disable=g-import-not-at-top
  from genjax import rundir  # pylint: disable=g-import-not-at-top
  # a user's mistakes that need no JAX fail before it starts, in a moment
  rundir.load_config(_WORKDIR.value)
  rundir.check_writable(pathlib.Path(_WORKDIR.value) / "eval.json", "the evaluation output",
                        directory=False)
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  result = experiment.evaluate(_WORKDIR.value, num_samples=_NUM_SAMPLES.value,
                               num_time_samples=_TIME_SAMPLES.value, step=_STEP.value,
                               split=_SPLIT.value, batch_size=_BATCH_SIZE.value,
                               seed=_SEED.value, sample_metrics=_SAMPLE_METRICS.value,
                               num_metric_samples=_NUM_METRIC_SAMPLES.value)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  common.run(main)
