"""Sample metrics of a model: draw samples with ``family.sample`` and compare them."""

from __future__ import annotations

import time
import types
from typing import Any

import jax
import numpy as np
from flax import nnx

from genjax.metrics import distances


def draw_samples(family: types.ModuleType, model: nnx.Module, key: jax.Array,
                 num: int, batch_size: int = 500, sample_kwargs: dict | None = None
                 ) -> np.ndarray:
  """``num`` samples of ``family.sample`` as numpy, in compiled batches.

  Batch ``i`` uses ``fold_in(key, i)``; every batch has ``batch_size`` images (one
  compilation: a family's ``sample`` compiles once per shape and static
  arguments), the surplus of the last one is dropped. ``sample_kwargs`` go to
  ``family.sample`` (e.g. a diffusion model's ``sampler`` and ``steps``).
  """
  size = min(batch_size, num)
  out = [np.asarray(family.sample(model, jax.random.fold_in(key, i), num=size,
                                  **(sample_kwargs or {})))
         for i in range(-(-num // size))]
  return np.concatenate(out)[:num]


def evaluate_samples(family: types.ModuleType, model: nnx.Module, real_uint8: np.ndarray,
                     *, num: int, key: jax.Array, binary: bool, batch_size: int = 500,
                     sample_kwargs: dict | None = None, **kwargs) -> dict[str, Any]:
  """FID, KID, precision and recall of ``num`` model samples against real images.

  Args:
    family: the model's family module (its ``sample`` is used).
    model: the model.
    real_uint8: real images ``uint8[N, H, W, C]`` in data space (e.g. the test
      split); the first ``num`` are used.
    num: samples drawn (and real images used): ``min(num, N)``.
    key: PRNG key of the samples.
    binary: the data hold 0/1 (binarized); both sets are scaled to 0/255 for the
      feature network.
    batch_size: images per compiled sampling call.
    sample_kwargs: passed to ``family.sample`` (e.g. ``sampler``, ``steps``).
    **kwargs: passed to `genjax.metrics.to_features` (``network``, ``data_dir``).

  Returns:
    ``fid``, ``kid``, ``precision``, ``recall``, ``num_metric_samples`` and the
    seconds spent (``metric_seconds``).
  """
  t0 = time.time()
  num = min(int(num), len(real_uint8))
  fake = draw_samples(family, model, key, num, batch_size, sample_kwargs)
  real = np.asarray(real_uint8[:num])
  if binary:
    real, fake = real * np.uint8(255), fake * np.uint8(255)
  out = distances.sample_metrics(real, fake, batch_size=batch_size, **kwargs)
  return {**out, "num_metric_samples": num, "metric_seconds": time.time() - t0}
