r"""Prints a run's learning curve (train loss and test evaluations) as a table.

  python -m experiments.curve --workdir=runs/vae_mnist
"""

from __future__ import annotations

import pathlib

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)


def curve_table(workdir: str | pathlib.Path) -> str:
  """A Markdown table: step, wall time, mean train loss, test evaluation.

  The test NLL is the family's default ``log_likelihood`` (exact for flows and
  autoregressive models; the single-sample ELBO estimate for the VAE); the wall
  time and train loss are those of the newest train row at or before the step.
  Rows logged twice (by a run killed and resumed) count once
  (`genjax.rundir.read_metrics`).
  """
  from genjax import rundir  # pylint: disable=g-import-not-at-top
  train = [r for r in rundir.read_metrics(workdir, "train") if "loss" in r]
  evals = [r for r in rundir.read_metrics(workdir, "eval") if "eval/nll_nats" in r]
  lines = ["| step | wall time (min) | train loss (nats) | test NLL (nats) | test bits/dim |",
           "|---:|---:|---:|---:|---:|"]
  for r in evals:
    # the newest train row at or before the evaluation
    t = max((x for x in train if x["step"] <= r["step"]), key=lambda x: x["step"],
            default={})
    wall = t.get("wall_seconds", float("nan")) / 60
    lines.append(f"| {r['step']} | {wall:.1f} | {t.get('loss', float('nan')):.2f} | "
                 f"{r['eval/nll_nats']:.2f} | {r['eval/bits_per_dim']:.4f} |")
  return "\n".join(lines)


def main(argv):
  del argv
  print(curve_table(_WORKDIR.value))


if __name__ == "__main__":
  common.run(main)
