r"""Compile time, step time and sampling speed of the flows against their depth K.

  python -m experiments.benchmarks.flow_depth [--models=glow,realnvp] \
      [--depths=4,8,16,32] [--hidden=16] [--batch_size=16] [--time_steps=5]

For each model and each K (flow steps per level, stacked and run in one
``lax.scan``), builds the smoke config on the 8x8 digits shape with
``num_steps = K``, compiles the train step of ``genjax.train.compile_train_step``
on a synthetic batch (``genjax.experiment.compile_setup``) and prints the lowering
and compile seconds (``genjax.inspection.inspect_jitted``), the step time
(``inspection.time_chained``) and the samples per second of a compiled
``family.sample`` of 64 images. Compile time stays flat in K because every level's
steps are traced once; step time grows linearly.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _MODELS, _DEPTHS, _HIDDEN, _BATCH, _TIME_STEPS  # pylint: disable=global-statement
  _MODELS = flags.DEFINE_list("models", ["glow", "realnvp"], "flow families to run")
  _DEPTHS = flags.DEFINE_list("depths", ["4", "8", "16", "32"], "values of num_steps (K)")
  _HIDDEN = flags.DEFINE_integer("hidden", 16, "conditioner width")
  _BATCH = flags.DEFINE_integer("batch_size", 16, "train batch size")
  _TIME_STEPS = flags.DEFINE_integer("time_steps", 5, "timed train steps per depth")
_NUM_SAMPLES = 64


def _config(name: str, depth: int):
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  config.model.num_steps = depth
  config.model.hidden = _HIDDEN.value
  config.batch_size = _BATCH.value
  return config


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  common.setup()
  device = jax.devices()[0]
  print(f"flow depth benchmark on {device.device_kind} ({device.platform}), "
        f"8x8x1 input, batch {_BATCH.value}, width {_HIDDEN.value}, "
        f"{_NUM_SAMPLES} samples per sampling call")
  print(f"{'model':8s} {'K':>3s} {'params':>9s} {'lower s':>8s} {'compile s':>9s} "
        f"{'step ms':>9s} {'sample compile s':>16s} {'samples/s':>10s}")
  for name in _MODELS.value:
    for depth in map(int, _DEPTHS.value):
      setup = experiment.compile_setup(_config(name, depth), devices=[device])
      report = inspection.inspect_jitted(setup.step, setup.state, setup.batch, setup.key)
      seconds, state = inspection.time_chained(
          report.compiled, setup.state, setup.batch, setup.key, num_calls=_TIME_STEPS.value)
      model = nnx.merge(setup.graphdef, state).model
      graphdef, model_state = nnx.split(model)
      sample = experiment.jit_model_fn(setup.family.sample, static_argnames=("num",))
      t0 = time.perf_counter()
      jax.block_until_ready(sample(graphdef, model_state, jax.random.key(0), num=_NUM_SAMPLES))
      sample_compile = time.perf_counter() - t0
      t0 = time.perf_counter()
      for i in range(3):
        jax.block_until_ready(
            sample(graphdef, model_state, jax.random.key(i + 1), num=_NUM_SAMPLES))
      rate = 3 * _NUM_SAMPLES / (time.perf_counter() - t0)
      print(f"{name:8s} {depth:3d} {setup.num_params:9,d} {report.lower_seconds:8.2f} "
            f"{report.compile_seconds:9.2f} {seconds * 1e3:9.1f} {sample_compile:16.2f} "
            f"{rate:10.0f}", flush=True)


if __name__ == "__main__":
  _define_flags()
  common.run(main)
