"""genjax.rundir: metric rows read once per step and kind, dropped past a resumed
step, and paths checked for writing before any work."""

import json
import os
import pathlib

import pytest

from genjax import rundir


def _write_rows(workdir, rows, tail=""):
  (workdir / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows) + tail)


def _steps(rows):
  return [(r["step"], "eval" if "eval/nll_nats" in r else "train") for r in rows]


# A run checkpointed at 10, killed after logging 15 (and cutting a row short),
# then resumed from 10 by a version that did not drop the rows past it.
KILLED_AND_RESUMED = [
    {"step": 5, "loss": 3.0}, {"step": 10, "loss": 2.0},
    {"step": 10, "eval/nll_nats": 2.5}, {"step": 15, "loss": 1.5},
    {"step": 15, "loss": 1.4}, {"step": 20, "loss": 1.0},
    {"step": 20, "eval/nll_nats": 1.2}, {"step": 20, "eval/nll_nats": 1.1},
]


def test_read_metrics_keeps_the_last_row_per_step_and_kind(tmp_path):
  _write_rows(tmp_path, KILLED_AND_RESUMED, tail='{"step": 25, "lo')
  rows = rundir.read_metrics(tmp_path)
  assert _steps(rows) == [(5, "train"), (10, "train"), (10, "eval"), (15, "train"),
                          (20, "train"), (20, "eval")]
  assert rows[3]["loss"] == 1.4 and rows[5]["eval/nll_nats"] == 1.1
  assert [r["step"] for r in rundir.read_metrics(tmp_path, "eval")] == [10, 20]
  assert rundir.logged_eval(tmp_path, 20) == {"nll_nats": 1.1}
  assert rundir.logged_eval(tmp_path, 15) is None
  assert rundir.read_metrics(tmp_path / "nothing") == []


def test_writer_drops_the_rows_past_the_resumed_step(tmp_path):
  rows = KILLED_AND_RESUMED[:4]
  _write_rows(tmp_path, rows, tail='{"step": 16, "lo')
  writer = rundir.MetricWriter(tmp_path, resume_step=10)
  writer.write(15, {"loss": 1.3})
  writer.close()
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l) for l in lines] == [*rows[:3], {"step": 15, "loss": 1.3}]
  assert not list(tmp_path.glob("*.tmp"))


def test_writer_leaves_the_file_alone_when_nothing_is_past_the_step(tmp_path):
  _write_rows(tmp_path, KILLED_AND_RESUMED[:3])
  before = (tmp_path / "metrics.jsonl").stat().st_ino
  rundir.MetricWriter(tmp_path, resume_step=10).close()
  assert (tmp_path / "metrics.jsonl").stat().st_ino == before  # not rewritten


def test_check_writable_accepts_new_and_existing_paths_and_creates_nothing(tmp_path):
  rundir.check_writable(tmp_path / "a" / "b", "the work directory")
  rundir.check_writable(tmp_path, "the work directory")
  rundir.check_writable(tmp_path / "x" / "grid.png", "--out", directory=False)
  assert list(tmp_path.iterdir()) == []


def test_check_writable_names_the_path_and_the_fix(tmp_path):
  file = tmp_path / "file"
  file.write_text("")
  with pytest.raises(NotADirectoryError, match=f"{file} is a file, not a directory"):
    rundir.check_writable(file, "the work directory")
  with pytest.raises(NotADirectoryError, match=f"lies under {file}, which is a file"):
    rundir.check_writable(file / "run", "the work directory")
  with pytest.raises(IsADirectoryError, match="is a directory: remove it"):
    rundir.check_writable(tmp_path, "--out", directory=False)


@pytest.mark.skipif(not pathlib.Path("/proc/self").exists(), reason="needs Linux /proc")
def test_check_writable_refuses_a_place_where_nothing_can_be_created():
  # nothing can be created in /proc, not even by root (chmod does not stop root)
  with pytest.raises(PermissionError, match="cannot write the work directory "
                                            "/proc/genjax_run: creating a file in /proc"):
    rundir.check_writable("/proc/genjax_run", "the work directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only directories")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
  tmp_path.chmod(0o555)
  try:
    with pytest.raises(PermissionError, match="Permission denied"):
      rundir.check_writable(tmp_path / "run", "the work directory")
  finally:
    tmp_path.chmod(0o755)
