r"""Inspects a config's compiled train step: parameters, FLOPs, memory, compile time.

  python -m experiments.inspect --config=experiments/configs/vae.py:mnist \
      [--dump_dir=ir/] [--time_steps=50]

With --dump_dir it writes the jaxpr, the StableHLO and the optimized HLO there;
with --time_steps it also runs that many steps on a synthetic batch and prints
the step time, examples/s (tokens/s for text) and the FLOP/s implied by XLA's cost
analysis, and the FLOPs utilisation against a peak: --peak_tflops, or the dense
bfloat16 peak of a known accelerator (genjax.inspection.PEAK_TFLOPS). Families
that count their model FLOPs (GPT) also get the model FLOPs utilisation (MFU,
Chowdhery et al. 2022); the utilisation of XLA's FLOPs is printed as HFU. The
library function behind it, genjax.inspection.inspect_jitted, works on any jitted
function.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from experiments import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config: experiments/configs/<name>.py:<variant>",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "use the config of this run instead")
_DUMP_DIR = flags.DEFINE_string("dump_dir", None, "write jaxpr/StableHLO/HLO here")
_TIME_STEPS = flags.DEFINE_integer("time_steps", 0, "also time this many steps")
_JSON = flags.DEFINE_string("json", None, "also write the numbers to this JSON file")
_PEAK = flags.DEFINE_float("peak_tflops", None,
                           "peak TFLOP/s of one device for utilisation (default: known "
                           "accelerators' dense bfloat16 peak)")


def main(argv):
  del argv
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  common.setup()
  if _CONFIG.value is not None:
    config = _CONFIG.value
  elif _WORKDIR.value:
    config = experiment.load_config(_WORKDIR.value)
  else:
    raise ValueError("pass --config=experiments/configs/<name>.py:<variant> or --workdir")
  setup = experiment.compile_setup(config)
  report = inspection.inspect_jitted(setup.step, setup.state, setup.batch, setup.key,
                                     dump_dir=_DUMP_DIR.value, name="train_step")
  numbers = {"model": config.model.name, "dataset": config.data.name,
             "parameters": setup.num_params, "global_batch": config.batch_size,
             "devices": setup.num_devices, "device_kind": setup.device_kind,
             "lower_seconds": report.lower_seconds,
             "compile_seconds": report.compile_seconds, "flops": report.flops,
             "bytes_accessed": report.bytes_accessed, "memory": report.memory}
  print(f"{config.model.name} on {config.data.name}: {setup.num_params:,} parameters, "
        f"batch {config.batch_size}, {setup.num_devices} x {setup.device_kind}")
  print(report.summary())
  if _TIME_STEPS.value:
    seconds, _ = inspection.time_chained(report.compiled, setup.state, setup.batch,
                                         setup.key, num_calls=_TIME_STEPS.value)
    numbers.update(step_seconds=seconds,
                   examples_per_second=config.batch_size / seconds,
                   flops_per_second=(report.flops or 0.0) / seconds)
    print(f"step time       {seconds * 1e3:9.3f} ms  ({_TIME_STEPS.value} steps)")
    print(f"throughput      {config.batch_size / seconds:9.0f} examples/s")
    if "tokens" in setup.batch:  # token models: the predicted tokens per second
      tokens = config.batch_size * (setup.batch["tokens"].shape[1] - 1) / seconds
      numbers["tokens_per_second"] = tokens
      print(f"                {tokens:9.0f} tokens/s")
    if report.flops:
      print(f"achieved        {report.flops / seconds / 1e9:9.2f} GFLOP/s")
    peak = _PEAK.value or inspection.peak_tflops(setup.device_kind)
    model_flops = getattr(setup.family, "model_flops", None)
    if peak:
      total = peak * 1e12 * setup.num_devices
      numbers["peak_tflops"] = peak
      if report.flops:
        numbers["hfu"] = report.flops / seconds / total
        print(f"HFU             {100 * numbers['hfu']:9.2f} %  (XLA FLOPs / {peak:g} TFLOP/s "
              "per device)")
      if model_flops is not None:
        numbers["model_flops"] = model_flops(config.model, config.batch_size)
        numbers["mfu"] = numbers["model_flops"] / seconds / total
        print(f"MFU             {100 * numbers['mfu']:9.2f} %  (model FLOPs / {peak:g} "
              "TFLOP/s per device)")
    else:
      print("utilisation     -  (unknown peak for this device: pass --peak_tflops)")
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump(numbers, f, indent=2)


if __name__ == "__main__":
  common.run(main)
