r"""Tokens per second of naive and cached sampling of a token model (GPT).

  python -m experiments.benchmarks.token_sampling \
      [--configs=gpt.py:shakespeare_char,gpt.py:shakespeare_char_gpu] \
      [--batch_sizes=1,16] [--new_tokens=512] [--repeats=3] [--quick]

For each config's model (random parameters, vocabulary 65: speed does not depend
on them), compiles ``gpt.sample`` with ``method="naive"`` (the whole window per
token) and ``method="cached"`` (a key/value cache: one position per token, the
window re-read when it shifts), draws ``--new_tokens`` after a one-token prompt and
prints the compile seconds, the median seconds of ``--repeats`` timed calls, tokens/s
and the speed-up of cached over naive. It prints numbers; it asserts nothing.
"""

from __future__ import annotations

import statistics
import time

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _CONFIGS, _BATCH_SIZES, _NEW_TOKENS, _REPEATS, _QUICK
  _CONFIGS = flags.DEFINE_list("configs", ["gpt.py:shakespeare_char",
                                           "gpt.py:shakespeare_char_gpu"],
                               "configs (experiments/configs/<file>:<variant>)")
  _BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "16"], "sequences per call")
  _NEW_TOKENS = flags.DEFINE_integer("new_tokens", 512, "tokens drawn per sequence")
  _REPEATS = flags.DEFINE_integer("repeats", 3, "timed calls per setting (median)")
  _QUICK = flags.DEFINE_bool("quick", False, "tiny settings, to check that it runs")


def _model(spec: str):
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import models  # pylint: disable=g-import-not-at-top
  file, variant = spec.split(":")
  config = importlib.import_module(
      f"experiments.configs.{file.removesuffix('.py')}").get_config(variant).model
  config.vocab_size = 65
  if _QUICK.value:
    config.num_layers, config.width, config.num_heads, config.block_size = 2, 32, 2, 16
  return models.get(config.name), models.get(config.name).build(config, jax.random.key(0))


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  common.setup()
  batches = [1, 2] if _QUICK.value else [int(b) for b in _BATCH_SIZES.value]
  new = 24 if _QUICK.value else _NEW_TOKENS.value
  device = jax.devices()[0]
  print(f"token sampling on {device.device_kind} ({device.platform}), {new} new tokens, "
        f"median of {_REPEATS.value} call(s){' (quick)' if _QUICK.value else ''}")
  print(f"{'config':32s} {'params':>9s} {'batch':>5s} {'method':7s} {'compile s':>9s} "
        f"{'call s':>8s} {'tokens/s':>10s} {'speed-up':>8s}")
  for spec in _CONFIGS.value:
    family, model = _model(spec)
    from genjax import train  # pylint: disable=g-import-not-at-top
    params = train.count_params(model)
    for num in batches:
      rates = {}
      for method in ("naive", "cached"):
        call = lambda k: family.sample(model, k, num, max_new_tokens=new, method=method)
        t0 = time.perf_counter()
        jax.block_until_ready(call(jax.random.key(0)))
        compile_s = time.perf_counter() - t0
        times = []
        for r in range(_REPEATS.value):
          t0 = time.perf_counter()
          jax.block_until_ready(call(jax.random.key(r + 1)))
          times.append(time.perf_counter() - t0)
        call_s = statistics.median(times)
        rates[method] = num * new / call_s
        print(f"{spec:32s} {params:9,d} {num:5d} {method:7s} {compile_s:9.2f} "
              f"{call_s:8.3f} {rates[method]:10.1f} {rates[method] / rates['naive']:8.1f}",
              flush=True)


if __name__ == "__main__":
  _define_flags()
  common.run(main)
