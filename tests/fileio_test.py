"""genjax.fileio: concurrent writers never collide, a failed write changes nothing."""

import threading
import time

import numpy as np
import pytest

from genjax import fileio


def test_concurrent_writers_each_get_their_own_temp_file(tmp_path):
  path = tmp_path / "cache" / "char.json"
  errors, barrier = [], threading.Barrier(8)

  def write(i):
    def slow(tmp):
      barrier.wait()  # every writer holds an open temp file at the same time
      tmp.write_text(f"writer {i}\n" * 100)
      time.sleep(0.01)
    try:
      fileio.write_atomically(path, slow)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  lines = path.read_text().splitlines()
  assert len(lines) == 100 and len(set(lines)) == 1  # one writer's complete file
  assert [p.name for p in path.parent.iterdir()] == ["char.json"]  # no temp files left


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
  path = tmp_path / "tokens.npy"
  fileio.write_atomically(path, lambda tmp: np.save(tmp, np.arange(3)))
  np.testing.assert_array_equal(np.load(path), np.arange(3))

  def broken(tmp):
    np.save(tmp, np.arange(5))
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    fileio.write_atomically(path, broken)
  np.testing.assert_array_equal(np.load(path), np.arange(3))
  assert [p.name for p in tmp_path.iterdir()] == ["tokens.npy"]
