r"""Writes a PNG grid of samples from the newest checkpoint of a run.

  python -m experiments.sample --workdir=runs/vae_digits --num=64 --out=samples.png

Families with visualizations (the VAE's reconstructions, interpolations and, for a
2-D latent space, the latent map) get them beside it as <out>_<name>.png.
"""

from __future__ import annotations

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)
_NUM = flags.DEFINE_integer("num", 64, "number of samples")
_OUT = flags.DEFINE_string("out", None, "output PNG (default: WORKDIR/samples/)")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_EXTRAS = flags.DEFINE_bool("extras", True, "also write the family's visualizations")


def main(argv):
  del argv
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  for path in experiment.sample(_WORKDIR.value, num=_NUM.value, out=_OUT.value,
                                seed=_SEED.value, extras=_EXTRAS.value):
    print(path)


if __name__ == "__main__":
  common.run(main)
