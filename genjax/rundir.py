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

from genjax.data import run_data
from genjax import models

# Config blocks that must not change when a run is resumed (they define the
# parameters, the data order or the meaning of the step count).
_FROZEN = ("seed", "batch_size", "model", "data.name", "data.view", "data.holdout",
           "data.holdout_every", "data.tokenizer", "data.vocab_size")


# -------------------------------------------------------------------- configs


def prepare_config(config: ml_collections.ConfigDict,
                   workdir: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
  """Validates a config and fills the model fields that follow from the data:
  ``model.input_shape`` for images, ``model.vocab_size`` (the tokenizer's; the
  copy in ``workdir`` when a text run has saved one) for text.

  Raises:
    KeyError: unknown model or dataset name (the message lists the known ones).
    ValueError: an inconsistent field, named with the fix.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  family = models.get(config.model.name)
  data = run_data.for_config(config, workdir)
  for name, value in data.model_fields().items():
    given = config.model.get(name)
    if isinstance(given, (list, tuple)):
      given = tuple(given)
    if given not in (None, (), 0) and given != value:
      raise ValueError(
          f"config.model.{name}={given!r} does not match the {config.data.name} data, "
          f"which needs {value!r}; leave it empty (it is filled from the data) or fix it")
    config.model[name] = value
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
    if part not in config:
      return None  # a field of another kind of data
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

  def write_text(self, step: int, tag: str, texts: list[str]) -> None:
    if self._tb is not None:
      self._tb.add_text(tag, "\n\n".join(f"    {t}".replace("\n", "\n    ")
                                          for t in texts), step)

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
