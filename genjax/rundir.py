"""The files of a work directory: its config (``config.json``) and metric rows.

``prepare_config`` checks and completes an experiment config; ``save_config`` and
``load_config`` write and read ``config.json``; ``check_resumable`` refuses a
resume whose config changes what a run cannot change; ``check_writable`` fails
early, with the path, where a launcher could not write; `MetricWriter` appends rows
to ``metrics.jsonl`` and TensorBoard, and ``read_metrics`` reads them back, one row
per step and kind. `genjax.experiment` runs on top of these.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any

import ml_collections
import numpy as np

from genjax import fileio
from genjax import models
# JAX and the data stack import where they are used: the launchers check a user's
# flags with this module before JAX starts, so that a mistake fails in a moment.

# Config blocks that must not change when a run is resumed (they define the
# parameters, the data order or the meaning of the step count).
_FROZEN = ("seed", "batch_size", "model", "data.name", "data.view", "data.holdout",
           "data.holdout_every", "data.tokenizer", "data.vocab_size")


# -------------------------------------------------------------------- configs


def prepare_config(config: ml_collections.ConfigDict,
                   workdir: str | pathlib.Path | None = None, *,
                   read_data: bool = True) -> ml_collections.ConfigDict:
  """Validates a config and fills the model fields that follow from the data:
  ``model.input_shape`` for images, ``model.vocab_size`` (the tokenizer's; the
  copy in ``workdir`` when a text run has saved one) for text.

  ``read_data=False`` validates only: the data is not read, and the config must
  already hold those fields (a benchmark on a synthetic batch without the corpus).

  Raises:
    KeyError: unknown model or dataset name (the message lists the known ones).
    ValueError: an inconsistent field, named with the fix.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from genjax.data import run_data  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  family = models.get(config.model.name)
  data_fields = run_data.for_config(config, workdir).model_fields() if read_data else {}
  for name, value in data_fields.items():
    given = config.model.get(name)
    if hasattr(given, "to_dict"):
      given = given.to_dict()
    if isinstance(given, (list, tuple)):
      given = tuple(given)
    if given not in (None, (), 0, {}) and _normalise(given) != _normalise(value):
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
  """Writes ``workdir/config.json`` (on process 0 only)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")


def load_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with."""
  path = pathlib.Path(workdir) / "config.json"
  if pathlib.Path(workdir).is_file():
    raise NotADirectoryError(f"{workdir} is a file, not a run directory: pass the "
                             "--workdir of a run")
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
        "fields that a resumed run cannot change: " + "; ".join(diffs) +
        ". Use a new --workdir, or launch with the saved config (--workdir alone, "
        "optionally with --config.<key> overrides of other fields).")


def _normalise(x):
  if isinstance(x, dict):
    return {k: _normalise(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_normalise(v) for v in x]
  return x


def check_num(num) -> None:
  """Raises ValueError unless ``num`` (samples to draw) is a positive integer."""
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"the number of samples (--num, num=) must be a positive "
                     f"integer, got {num!r}")


def check_writable(path: str | pathlib.Path, what: str, directory: bool = True) -> None:
  """Fails unless a launcher can write ``path`` (a directory, or else a file).

  Nothing is created: the check writes and removes a temporary file in ``path``
  or in its nearest existing parent, so that a run, an evaluation or a sample
  grid does not fail after minutes of work on a path it cannot write.

  Args:
    path: the directory (``directory=True``) or file to be written.
    what: how the message names it (``"the work directory"``, ``"--out"``).
    directory: whether ``path`` is a directory.

  Raises:
    NotADirectoryError: ``path`` (a directory) or a parent of it is a file.
    IsADirectoryError: ``path`` (a file) is a directory.
    PermissionError: nothing can be created there (read-only, no permission).
  """
  path = pathlib.Path(path).expanduser().absolute()
  if directory and path.exists() and not path.is_dir():
    raise NotADirectoryError(f"{what} {path} is a file, not a directory: pass a "
                             "directory (it is created if missing)")
  if not directory and path.is_dir():
    raise IsADirectoryError(f"{what} {path} is a directory: remove it, or write "
                            "elsewhere")
  folder = path if directory else path.parent
  existing = next(p for p in (folder, *folder.parents) if p.exists())
  if not existing.is_dir():
    raise NotADirectoryError(f"{what} {path} lies under {existing}, which is a file: "
                             "pass another path")
  try:
    fd, probe = tempfile.mkstemp(dir=existing, prefix=".genjax_write_check_")
  except OSError as e:
    raise PermissionError(
        f"cannot write {what} {path}: creating a file in {existing} failed "
        f"({e.strerror}); pass a path you can write to, or make it writable") from None
  os.close(fd)
  os.remove(probe)


# -------------------------------------------------------------------- metrics


def _row_kind(row: dict[str, Any]) -> str:
  return "eval" if any(k.startswith("eval/") for k in row) else "train"


def _parse_rows(path: pathlib.Path) -> list[tuple[str, dict[str, Any]]]:
  """``(line, row)`` for each whole row; a line cut short by a kill is skipped."""
  out = []
  for line in path.read_text(encoding="utf-8").splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and "step" in row:
      out.append((line, row))
  return out


def read_metrics(workdir: str | pathlib.Path,
                 kind: str | None = None) -> list[dict[str, Any]]:
  """The rows of ``workdir/metrics.jsonl``, one per step and kind, by step.

  A run resumed after a kill logs again the steps between its last checkpoint
  and the kill; the writer drops them on resume, and this reader also keeps only
  the last row of each (step, kind), the kinds being train rows and ``eval/``
  rows, so that files written before that fix read the same.

  Args:
    workdir: a run directory.
    kind: ``"train"`` or ``"eval"`` for the rows of that kind only; None for all.

  Returns:
    The rows as dicts, sorted by step (train before eval at equal steps, as
    written); empty if the run has no ``metrics.jsonl``.
  """
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  rows: dict[tuple[int, str], dict[str, Any]] = {}
  for _, row in _parse_rows(path):
    if kind is None or _row_kind(row) == kind:
      rows[(row["step"], _row_kind(row))] = row
  return sorted(rows.values(), key=lambda r: r["step"])


def logged_eval(workdir: str | pathlib.Path, step: int) -> dict[str, Any] | None:
  """The evaluation logged at ``step``, keys without ``eval/`` and its timing, if any."""
  rows = [r for r in read_metrics(workdir, "eval") if r["step"] == step]
  if not rows:
    return None
  return {k[len("eval/"):]: v for k, v in rows[-1].items()
          if k.startswith("eval/") and k != "eval/seconds"}


def _drop_rows_after(path: pathlib.Path, step: int) -> None:
  """Rewrites ``path`` (atomically) without its rows past ``step``."""
  if not path.exists():
    return
  text = path.read_text(encoding="utf-8")
  keep = [line + "\n" for line, row in _parse_rows(path) if row["step"] <= step]
  if "".join(keep) == text:
    return
  fileio.write_atomically(path, lambda tmp: tmp.write_text("".join(keep), encoding="utf-8"))


# -------------------------------------------------------------------- writers


class MetricWriter:
  """Writes metric rows to ``metrics.jsonl`` and TensorBoard.

  Only process 0 of a run writes (elsewhere every method does nothing), so that a
  run on several hosts leaves one copy of each file.

  Args:
    workdir: the run directory.
    resume_step: the step the run starts from; rows past it (logged after the
      checkpoint it resumes from, by a run that was killed) are dropped first.
  """

  def __init__(self, workdir: pathlib.Path, resume_step: int | None = None):
    import jax  # pylint: disable=g-import-not-at-top
    self._file = self._tb = None
    if jax.process_index() != 0:
      return
    if resume_step is not None:
      _drop_rows_after(workdir / "metrics.jsonl", resume_step)
    self._file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(workdir / "tb"))
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
      self._tb = None

  def write(self, step: int, row: dict[str, Any]) -> None:
    if self._file is None:
      return
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
    if self._file is not None:
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
