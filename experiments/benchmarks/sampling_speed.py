r"""Images per second of a trained model's compiled ``sample``, for any family.

  python -m experiments.benchmarks.sampling_speed --workdir=runs/glow_mnist \
      [--batch_sizes=1,64] [--calls=5]

Restores the newest checkpoint in ``--workdir``, compiles ``family.sample`` (the
same jitted function ``experiments.sample`` uses) for each batch size, and prints
the compile seconds and the images per second of ``--calls`` back-to-back calls
with fresh keys (compilation excluded).
"""

from __future__ import annotations

from absl import flags

from experiments import common
from experiments.benchmarks import measure


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _WORKDIR, _BATCHES, _CALLS  # pylint: disable=global-statement
  _WORKDIR = flags.DEFINE_string("workdir", None, "run directory with checkpoints", required=True)
  _BATCHES = flags.DEFINE_list("batch_sizes", ["1", "64"], "images per sample call")
  _CALLS = flags.DEFINE_integer("calls", 5, "timed calls per batch size")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  family, model, config, step = experiment.restore_model(_WORKDIR.value)
  device = jax.devices()[0]
  print(f"{config.model.name} on {config.data.name} (step {step}), "
        f"{device.device_kind} ({device.platform})")
  print(f"{'batch':>6s} {'compile s':>10s} {'s/call':>9s} {'images/s':>10s}")
  for num in map(int, _BATCHES.value):
    r = measure.sampling_speed(family, model, num, calls=_CALLS.value)
    print(f"{num:6d} {r['compile_seconds']:10.2f} {r['seconds_per_call']:9.4f} "
          f"{r['images_per_sec']:10.1f}", flush=True)


if __name__ == "__main__":
  _define_flags()
  common.run(main)
