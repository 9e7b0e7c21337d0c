r"""What the train step costs beyond the model: the norms and the non-finite guard.

  python -m experiments.benchmarks.step_overhead \
      [--models=pixelcnn,gated_pixelcnn,glow,vae:mnist_conv,diffusion,gpt] \
      [--batch_size=64] [--rounds=3] [--steps=5] [--out=FILE.json]

genjax's train step (`genjax.train.make_train_step`) does, besides the model's
loss, its gradient and the optimizer's update:

* the non-finite guard: finiteness of the loss, the metrics and every gradient,
  and the update under ``lax.cond`` (a non-finite step changes nothing);
* three norms for the logs: of the gradients, the new parameters and the update;
* the step counter advanced only when every metric is finite, metrics as float32.

For each model this script compiles that step and a bare one from the same
state and batch: the same step traced with the finiteness test replaced by a
constant True and the norms by constant zeros (`without_checks`), which XLA then
folds away; every other operation (the loss, its gradient, the optimizer's update,
a family's own ``update`` hook such as diffusion's moving average or the GAN's two
players) is the library's own. It times them back to back
(`genjax.inspection.time_chained`, the state donated), in ``--rounds`` alternating
rounds of ``--steps`` steps; the table shows the median of the rounds and the
overhead, library / bare - 1.

A model is ``name`` (its ``mnist`` config) or ``name:variant``; ``gpt`` is the
shakespeare_char architecture on generated tokens, as in ``step_memory``. Image
models run at ``--batch_size`` (0: the config's own).

Time is a measurement of the machine it runs on: run it alone on an idle machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time

from absl import flags

from experiments import common
from experiments.benchmarks import measure
from experiments.benchmarks import step_memory

DEFAULT_MODELS = ("pixelcnn", "gated_pixelcnn", "glow", "vae:mnist_conv", "dcgan", "diffusion",
                  "gpt")


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _MODELS, _BATCH, _ROUNDS, _STEPS, _OUT  # pylint: disable=global-statement
  _MODELS = flags.DEFINE_list("models", list(DEFAULT_MODELS),
                              "models to time: name (its mnist config) or name:variant")
  _BATCH = flags.DEFINE_integer("batch_size", 64, "batch of the image models (0: the "
                                "config's own)", lower_bound=0)
  _ROUNDS = flags.DEFINE_integer("rounds", 3, "alternating rounds", lower_bound=1)
  _STEPS = flags.DEFINE_integer("steps", 5, "timed steps per round and step", lower_bound=1)
  _OUT = flags.DEFINE_string("out", None, "write every number to this JSON file")


@contextlib.contextmanager
def without_checks():
  """While active, `genjax.train` traces its finiteness test as a constant True and
  its norms as constant zeros: a step traced (compiled) inside is the library's
  step without the non-finite guard and the norms."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genjax import train  # pylint: disable=g-import-not-at-top
  saved = train._all_finite, train.global_norm  # pylint: disable=protected-access
  train._all_finite = lambda leaves: jnp.asarray(True)  # pylint: disable=protected-access
  train.global_norm = lambda tree: jnp.zeros((), jnp.float32)
  try:
    yield
  finally:
    train._all_finite, train.global_norm = saved  # pylint: disable=protected-access


def compile_bare_step(family, graphdef, state, batch, key):
  """The compiled train step of ``family`` without its guard and norms (state
  donated), for arguments shaped as ``(state, batch, key)``."""
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import train  # pylint: disable=g-import-not-at-top
  with without_checks():
    step = jax.jit(train.make_train_step(family, graphdef), donate_argnums=0)
    return step.lower(state, batch, key).compile()


def model_config(spec: str, batch_size: int):
  """The config of ``name`` or ``name:variant`` at ``batch_size`` (0: its own)."""
  import importlib  # pylint: disable=g-import-not-at-top
  name, _, variant = spec.partition(":")
  if variant:
    config = importlib.import_module(f"experiments.configs.{name}").get_config(variant)
  else:
    config = step_memory.model_config(name, "float32")
  if batch_size and name != "gpt":
    config.batch_size = batch_size
  return config


def measure_model(spec: str, batch_size: int, rounds: int, steps: int) -> dict:
  """Median seconds per step of the library's step and the bare one for ``spec``."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  config = model_config(spec, batch_size)
  setup = experiment.compile_setup(config, jax.devices()[:1])
  bare = compile_bare_step(setup.family, setup.graphdef, setup.state, setup.batch, setup.key)
  states = {"library": setup.state,
            "bare": jax.tree.map(jnp.copy, setup.state)}  # each step donates its own
  steps_of = {"library": setup.step, "bare": bare}
  times = {name: [] for name in steps_of}
  for r in range(rounds):
    order = list(steps_of) if r % 2 == 0 else list(reversed(steps_of))
    for name in order:
      seconds, states[name] = inspection.time_chained(
          steps_of[name], states[name], setup.batch, setup.key, num_calls=steps,
          warmup=3 if r == 0 else 1)
      times[name].append(seconds)
  library, bare_s = (statistics.median(times[k]) for k in ("library", "bare"))
  return {"model": spec, "params": setup.num_params, "batch_size": config.batch_size,
          "library_seconds": library, "bare_seconds": bare_s,
          "overhead": library / bare_s - 1, "rounds": times}


def main(argv):
  del argv
  common.setup()
  t0, load0 = time.time(), os.getloadavg()
  rows = []
  print(f"{'model':<16} {'params':>10} {'batch':>5} {'library ms':>11} {'bare ms':>9} "
        f"{'overhead':>9}", flush=True)
  for spec in _MODELS.value:
    row = measure_model(spec, _BATCH.value, _ROUNDS.value, _STEPS.value)
    rows.append(row)
    print(f"{spec:<16} {row['params']:>10,} {row['batch_size']:>5} "
          f"{row['library_seconds'] * 1e3:>11.1f} {row['bare_seconds'] * 1e3:>9.1f} "
          f"{row['overhead']:>+8.1%}", flush=True)
  wall = time.time() - t0
  footer = {"cpu": measure.cpu_model(), "load_start": load0, "load_end": os.getloadavg(),
            "wall_seconds": wall}
  print(f"({footer['cpu']}; load {load0[0]:.2f} -> {footer['load_end'][0]:.2f}; "
        f"{wall / 60:.1f} min wall; median of {_ROUNDS.value} alternating rounds of "
        f"{_STEPS.value} steps)")
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({"rows": rows, **footer}, f, indent=1)


if __name__ == "__main__":
  _define_flags()
  common.run(main)
