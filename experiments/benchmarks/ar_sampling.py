r"""Images per second of naive and cached autoregressive sampling.

  python -m experiments.benchmarks.ar_sampling \
      [--models=pixelcnn,gated_pixelcnn,pixelrnn,pixelcnn_pp] \
      [--batch_sizes=1,64] [--repeats=1] [--naive_rows=R] [--quick]

For each model, each image shape (28x28x1 binarized, 32x32x3 8-bit) and each
batch size, builds the model of the ``mnist`` config variant (with its
likelihood switched to fit the shape; PixelCNN++ models 8-bit data only, so its
28x28x1 images are 8-bit; random parameters: speed does not depend on them),
compiles ``family.sample`` for ``method="naive"`` (the whole network per
sub-pixel) and ``method="cached"`` (O(layers * kernel) per sub-pixel), and
prints the compile seconds and images/s of each, and their ratio. With
``--naive_rows=R`` the naive sampler draws only the first R rows (a scan of
``R * W * C`` whole-network steps) and its images/s is scaled by ``R / H``: the
table then says "naive (R rows)". ``--quick``
shrinks everything (8x8x1 and 4x4x3, batch 1 and 4, width 16) to check that the
benchmark runs. It prints numbers; it asserts nothing.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _MODELS, _BATCH_SIZES, _REPEATS, _QUICK, _NAIVE_ROWS
  _MODELS = flags.DEFINE_list("models", ["pixelcnn", "gated_pixelcnn", "pixelrnn", "pixelcnn_pp"],
                              "families to run")
  _BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64"], "images per sampling call")
  _REPEATS = flags.DEFINE_integer("repeats", 1, "timed calls per setting")
  _QUICK = flags.DEFINE_bool("quick", False, "tiny settings, to check that it runs")
  _NAIVE_ROWS = flags.DEFINE_integer(
      "naive_rows", 0, "time naive sampling over only this many image rows and scale "
      "to the whole image (every naive step is one whole-network pass, so the cost per "
      "step is the same at every position); 0 samples whole images")


def _model(name: str, shape, likelihood: str):
  import importlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from genjax import models  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"experiments.configs.{name}").get_config("mnist").model
  config.input_shape = shape
  if name == "pixelcnn_pp":  # 8-bit only; its quick size is the smoke variant's
    if _QUICK.value:
      config.features, config.num_resnet, config.num_scales = 8, 1, 2
  else:
    config.likelihood = likelihood
    if _QUICK.value:
      config.features, config.output_features, config.num_layers = 16, 16, 2
  return models.get(name), models.get(name).build(config, jax.random.key(0))


def _sample(family, model, key, num: int, method: str, rows: int):
  """``family.sample``; for ``method="naive"`` only the first ``rows`` rows."""
  from genjax.models import autoregressive as ar  # pylint: disable=g-import-not-at-top
  from genjax.nn import masked  # pylint: disable=g-import-not-at-top
  from genjax.models import pixelcnn_pp  # pylint: disable=g-import-not-at-top
  h, w, c = model.input_shape
  if method == "cached" or rows >= h:
    return family.sample(model, key, num, method=method)
  if family is pixelcnn_pp:  # one step per pixel, all channels at once
    return pixelcnn_pp.sample_naive(model, key, num, num_steps=rows * w)
  model = masked.premask(model)  # as family.sample does
  return ar.sample_naive(lambda x: family.conditionals(model, x), key, num,
                         model.input_shape, model.likelihood, num_steps=rows * w * c)


def _time(fn, *args):
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_REPEATS.value):
    jax.block_until_ready(fn(*args))
  return compile_s, (time.perf_counter() - t0) / _REPEATS.value


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  common.setup()
  shapes = ([((8, 8, 1), "bernoulli"), ((4, 4, 3), "categorical")] if _QUICK.value
            else [((28, 28, 1), "bernoulli"), ((32, 32, 3), "categorical")])
  batches = [1, 4] if _QUICK.value else [int(b) for b in _BATCH_SIZES.value]
  device = jax.devices()[0]
  print(f"autoregressive sampling on {device.device_kind} ({device.platform}), "
        f"{_REPEATS.value} timed call(s) per setting{' (quick)' if _QUICK.value else ''}")
  print(f"{'model':15s} {'shape':9s} {'batch':>5s} {'method':16s} {'compile s':>9s} "
        f"{'call s':>9s} {'images/s':>10s} {'speed-up':>8s}")
  for name in _MODELS.value:
    for shape, likelihood in shapes:
      family, model = _model(name, shape, likelihood)
      graphdef, state = nnx.split(model)
      rows = min(_NAIVE_ROWS.value or shape[0], shape[0])
      for num in batches:
        rates = {}
        for method in ("naive", "cached"):
          fn = jax.jit(lambda s, k, method=method, num=num: _sample(
              family, nnx.merge(graphdef, s), k, num, method, rows))
          compile_s, call_s = _time(fn, state, jax.random.key(0))
          rates[method] = num / call_s * (rows / shape[0] if method == "naive" else 1.0)
          speedup = f"{rates[method] / rates['naive']:8.1f}"
          label = f"naive ({rows} rows)" if method == "naive" and rows < shape[0] else method
          print(f"{name:15s} {'x'.join(map(str, shape)):9s} {num:5d} {label:16s} "
                f"{compile_s:9.2f} {call_s:9.3f} {rates[method]:10.2f} {speedup}",
                flush=True)


if __name__ == "__main__":
  _define_flags()
  common.run(main)
