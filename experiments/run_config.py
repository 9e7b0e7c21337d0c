r"""The config saved in a run directory, as a config file for ``--config``.

  python -m experiments.main --config=experiments/run_config.py:runs/vae_digits \
      --workdir=runs/vae_digits --config.optimizer.learning_rate=3e-4

The launchers use it for you when given ``--workdir`` and ``--config.<key>``
overrides without ``--config``:

  python -m experiments.main --workdir=runs/vae_digits \
      --config.optimizer.learning_rate=3e-4
"""

from __future__ import annotations


import ml_collections


def get_config(workdir: str) -> ml_collections.ConfigDict:
  """``workdir/config.json``, its lists as tuples (as the config files write them,
  and as ``--config.<key>`` overrides parse them)."""
  from genjax import rundir  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(_tuples(rundir.load_config(workdir).to_dict()))


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x
