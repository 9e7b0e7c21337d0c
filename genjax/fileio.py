"""Atomic file writes shared by the data caches, tokenizers, metrics and run files.

Every cache genjax writes (prepared corpora, token streams, tokenizers, the feature
classifier, metric rows) may be written by several processes at once: parallel test
workers or launchers sharing one data directory. `write_atomically` gives each writer
its own temporary file beside the target and renames it into place, so a reader sees
either the old file or a complete new one, and two writers never collide.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Callable


def write_atomically(path: str | os.PathLike[str],
                     write: Callable[[pathlib.Path], object]) -> pathlib.Path:
  """Calls ``write(tmp)`` on a fresh temporary file beside ``path``, then renames it.

  The temporary name keeps ``path``'s suffix (``np.save`` and ``np.savez`` append
  theirs otherwise). On any error the temporary file is removed and ``path`` is left
  as it was.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.",
                              suffix=f".tmp{path.suffix}")
  os.close(fd)
  tmp = pathlib.Path(name)
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return path
