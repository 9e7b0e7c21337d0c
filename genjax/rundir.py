"""The files of a work directory: its config (``config.json``) and metric rows.

``prepare_config`` checks and completes an experiment config; ``save_config`` and
``load_config`` write and read ``config.json``; ``check_resumable`` refuses a
resume whose config changes what a run cannot change; `MetricWriter` appends rows
to ``metrics.jsonl`` and TensorBoard. `genjax.experiment` runs on top of these.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from genjax import data as data_lib
from genjax import models

# Config blocks that must not change when a run is resumed (they define the
# parameters, the data order or the meaning of the step count).
_FROZEN = ("seed", "batch_size", "model", "data.name", "data.view")


# -------------------------------------------------------------------- configs


def prepare_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Validates a config and fills derived fields (``model.input_shape``).

  Raises:
    KeyError: unknown model or dataset name (the message lists the known ones).
    ValueError: an inconsistent field, named with the fix.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  family = models.get(config.model.name)
  if config.data.name not in data_lib.DATASETS:
    raise KeyError(
        f"unknown dataset {config.data.name!r}; known datasets: "
        f"{', '.join(data_lib.DATASETS)}. Set config.data.name to one of them.")
  if config.data.view not in data_lib.VIEWS:
    raise ValueError(
        f"unknown config.data.view {config.data.view!r}; choose one of "
        f"{', '.join(data_lib.VIEWS)}")
  shape = tuple(data_lib.info(config.data.name)["input_shape"])
  given = tuple(config.model.get("input_shape", ()) or ())
  if given and given != shape:
    raise ValueError(
        f"config.model.input_shape={given} does not match the {config.data.name} "
        f"data of shape {shape}; leave it empty (it is filled from the data) or fix it")
  config.model.input_shape = shape
  if config.batch_size % jax.process_count():
    raise ValueError(
        f"config.batch_size={config.batch_size} must be divisible by the "
        f"{jax.process_count()} hosts")
  check = getattr(family, "check_config", None)
  if check is not None:
    check(config)
  return config


def save_config(config, workdir: pathlib.Path) -> None:
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(
        f"{path} does not exist: {workdir} holds no genjax run. Train first with "
        "python -m experiments.main --config=experiments/configs/<name>.py:<variant> "
        f"--workdir={workdir}")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def _get(config, dotted: str):
  for part in dotted.split("."):
    config = config[part]
  return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config


def check_resumable(saved, config) -> None:
  diffs = []
  for key in _FROZEN:
    a, b = _normalise(_get(saved, key)), _normalise(_get(config, key))
    if a != b:
      diffs.append(f"{key}: saved {a!r}, now {b!r}")
  if diffs:
    raise ValueError(
        "the config differs from the one this work directory was trained with, in "
        "fields that a resumed run cannot change:\n  " + "\n  ".join(diffs) +
        "\nUse a new --workdir, or launch with the saved config (--workdir alone).")


def _normalise(x):
  if isinstance(x, dict):
    return {k: _normalise(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_normalise(v) for v in x]
  return x


# -------------------------------------------------------------------- writers


class MetricWriter:
  """Writes metric rows to ``metrics.jsonl`` and TensorBoard."""

  def __init__(self, workdir: pathlib.Path):
    self._file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(workdir / "tb"))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      self._tb = None

  def write(self, step: int, row: dict[str, Any]) -> None:
    row = {"step": int(step), **{k: _py(v) for k, v in row.items()}}
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
          self._tb.add_scalar(k, v, step)

  def write_images(self, step: int, tag: str, grid_uint8: np.ndarray) -> None:
    if self._tb is not None:
      self._tb.add_image(tag, grid_uint8, step, dataformats="HWC")

  def close(self) -> None:
    self._file.close()
    if self._tb is not None:
      self._tb.close()


def _py(v):
  v = np.asarray(v)
  return v.item() if v.size == 1 else v.tolist()


def fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
