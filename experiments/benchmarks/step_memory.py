r"""Memory (XLA's memory analysis) and step time of train steps, float32 against bfloat16.

  python -m experiments.benchmarks.step_memory [--models=vae,glow,pixelcnn,gpt] \
      [--dtypes=float32,bfloat16] [--time_steps=5] [--devices=1]

For each model, compiles the train step of its MNIST config (GPT: the
shakespeare_char architecture, 4 layers of width 128 over blocks of 64 tokens, on
the generated counting corpus, so no text files are needed) on a synthetic batch
(`genjax.experiment.compile_setup`) with ``config.model.dtype`` set to each of
``--dtypes``, and prints the train state's size, XLA's memory analysis of the
step (arguments, outputs, the part of the outputs aliased to donated arguments,
temporaries) with its peak ``arguments + outputs - aliased + temporaries``, and
the step time (`genjax.inspection.time_chained`; ``--time_steps=0`` skips it).

``config.model.dtype`` exists for every family (``--models`` takes any family with
an ``mnist`` config, e.g. realnvp, gated_pixelcnn, pixelrnn, pixelcnn_pp, dcgan,
diffusion); a family without it would print a line saying so for a dtype other
than float32.

Time is a measurement of the machine it runs on: run it alone on an idle machine,
not under ``nice`` beside other work. Memory does not depend on the load.
"""

from __future__ import annotations

import importlib

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _MODELS, _DTYPES, _TIME_STEPS, _DEVICES  # pylint: disable=global-statement
  _MODELS = flags.DEFINE_list("models", ["vae", "glow", "pixelcnn", "gpt"], "families to run")
  _DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"],
                              "values of config.model.dtype (float32 alone leaves it unset)")
  _TIME_STEPS = flags.DEFINE_integer("time_steps", 5, "timed train steps (0: memory only)")
  _DEVICES = flags.DEFINE_integer("devices", 1, "devices of the data-parallel mesh")


def model_config(name: str, dtype: str):
  """The config step_memory measures for family ``name`` at compute ``dtype``."""
  module = importlib.import_module(f"experiments.configs.{name}")
  if name == "gpt":
    config = module.get_config("smoke")
    config.model.update(block_size=64, num_layers=4, num_heads=4, width=128)
    config.batch_size = 12
  else:
    config = module.get_config("mnist")
  if dtype != "float32":
    config.model.dtype = dtype
  return config


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  common.setup()
  mib = 2.0 ** -20
  print(f"{'model':<9} {'dtype':<9} {'params':>9} {'state':>8} {'args':>8} {'out':>8} "
        f"{'aliased':>8} {'temp':>8} {'peak':>8} {'step':>9}")
  for name in _MODELS.value:
    for dtype in _DTYPES.value:
      config = model_config(name, dtype)
      try:
        setup = experiment.compile_setup(config, jax.devices()[:_DEVICES.value])
      except ValueError as err:
        if "config.model.dtype" not in str(err):
          raise
        print(f"{name:<9} {dtype:<9} (this family has no config.model.dtype yet)",
              flush=True)
        continue
      state_bytes = sum(x.nbytes for x in jax.tree.leaves(setup.state))
      report = inspection.inspect_jitted(setup.step, setup.state, setup.batch, setup.key)
      m = report.memory
      peak = m["argument"] + m["output"] - m.get("alias", 0) + m["temp"]
      step = "-"
      if _TIME_STEPS.value:
        seconds, _ = inspection.time_chained(report.compiled, setup.state, setup.batch,
                                             setup.key, num_calls=_TIME_STEPS.value)
        step = f"{seconds * 1e3:.1f} ms"
      print(f"{name:<9} {dtype:<9} {setup.num_params:>9,} {state_bytes * mib:>7.2f}M "
            f"{m['argument'] * mib:>7.2f}M {m['output'] * mib:>7.2f}M "
            f"{m.get('alias', 0) * mib:>7.2f}M {m['temp'] * mib:>7.2f}M "
            f"{peak * mib:>7.2f}M {step:>9}", flush=True)
  print(f"(batch: each config's own; {_DEVICES.value} x {jax.devices()[0].device_kind}; "
        "M = MiB)")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
