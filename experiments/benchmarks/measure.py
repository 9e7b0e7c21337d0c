"""Measurements shared by the benchmark scripts.

* `calibrated_steps`: how many train steps of a config fit a wall-clock budget
  on this machine, from the measured time of its compiled step;
* `mnist_images`: a split of MNIST in a run's view, as ``uint8[N, 28, 28, 1]``;
* `sampling_speed`: images per second of a model's compiled ``sample``;
* `median_ms`: the median time of a compiled call, in milliseconds.
"""

from __future__ import annotations

import pathlib
import platform
import time
import types
from typing import Any


def median_ms(fn, *args, repeats: int = 5) -> float:
  """Median milliseconds of ``fn(*args)`` over ``repeats`` synchronised calls, after
  one untimed call (compilation)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)) * 1e3


def calibrated_steps(config, minutes: float, num_calls: int = 20) -> tuple[int, float]:
  """``(steps, seconds per step)``: the train steps of ``config`` that fit ``minutes``.

  The step is the launcher's own compiled train step (`experiment.compile_setup`),
  timed over ``num_calls`` chained calls after its warm-up; compilation, data
  loading, checkpoints and evaluation are not counted.
  """
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  setup = experiment.compile_setup(config)
  seconds, _ = inspection.time_chained(setup.step, setup.state, setup.batch, setup.key,
                                       num_calls=num_calls)
  return max(1, int(minutes * 60 / seconds)), seconds


def mnist_images(config, view: str, split: str = "test"):
  """A split of MNIST in ``view`` (binarized: genjax's fixed-seed static draw)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import data  # pylint: disable=g-import-not-at-top
  batches = data.eval_batches("mnist", split, batch_size=1000, view=view,
                              seed=config.seed, data_dir=config.data.data_dir or None,
                              mnist_dir=config.data.mnist_dir or None)
  return np.concatenate([b["image"] for b in batches])


def sampling_speed(family: types.ModuleType, model, num: int, *, calls: int = 5,
                   sample_kwargs: dict | None = None) -> dict[str, Any]:
  """Images per second of ``family.sample`` at ``num`` images per call.

  The function timed is the jitted one `experiments.sample` uses; the first call
  (compilation) is timed apart, then ``calls`` back-to-back calls with fresh keys.

  Returns:
    ``batch``, ``compile_seconds``, ``seconds_per_call`` and ``images_per_sec``.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  kwargs = dict(sample_kwargs or {})
  graphdef, state = nnx.split(model)
  sample = experiment.jit_model_fn(family.sample,
                                   static_argnames=("num", *sorted(kwargs)))
  t0 = time.perf_counter()
  jax.block_until_ready(sample(graphdef, state, jax.random.key(0), num=num, **kwargs))
  compile_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(calls):
    jax.block_until_ready(sample(graphdef, state, jax.random.key(i + 1), num=num, **kwargs))
  per_call = (time.perf_counter() - t0) / calls
  return {"batch": num, "compile_seconds": compile_seconds, "seconds_per_call": per_call,
          "images_per_sec": num / per_call}


def cpu_model() -> str:
  """The CPU's model name (``/proc/cpuinfo``), for the hardware line of a result."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"
