"""Start-up shared by the launchers: platform set-up and readable errors."""

from __future__ import annotations

import os
import sys

from absl import app


def setup() -> None:
  """Joins a multi-host run when asked to (``GENJAX_MULTIHOST=1``); turns on JAX's
  persistent compilation cache in ``~/.cache/genjax/jax_cache`` (unless
  ``JAX_COMPILATION_CACHE_DIR`` names another, or ``GENJAX_COMPILATION_CACHE=0``).

  On a TPU pod or a multi-node GPU cluster every host runs the same command;
  ``jax.distributed.initialize()`` finds the coordinator from the environment.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  # orbax and grain log every checkpoint step at INFO; genjax prints its own progress.
  logging.set_verbosity(os.environ.get("GENJAX_LOG_LEVEL", "warning").lower())
  # A persistent compilation cache: a relaunch (resume, evaluate, sample) of the same
  # config reuses the compiled programs instead of compiling them again.
  if (not os.environ.get("JAX_COMPILATION_CACHE_DIR")
      and os.environ.get("GENJAX_COMPILATION_CACHE", "1") != "0"):
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    jax.config.update("jax_compilation_cache_dir",
                      os.path.expanduser(os.path.join(cache, "genjax", "jax_cache")))
  if os.environ.get("GENJAX_MULTIHOST", "0") == "1":
    jax.distributed.initialize()


def run(main) -> None:
  """``absl.app.run`` that prints a one-line error instead of a traceback for
  the user errors genjax raises (bad names, bad config values, missing data)."""
  def wrapped(argv):
    try:
      return main(argv)
    except (KeyError, ValueError, FileNotFoundError, TypeError) as e:
      if os.environ.get("GENJAX_TRACEBACK"):
        raise
      msg = e.args[0] if isinstance(e, KeyError) and e.args else e
      sys.exit(f"error: {msg}\n(set GENJAX_TRACEBACK=1 for the traceback)")
  app.run(wrapped, flags_parser=_parse_flags)


def _parse_flags(argv):
  """absl's flag parsing, with a one-line error for config overrides that name a
  key the config does not have (ml_collections raises a bare KeyError)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except KeyError as e:
    detail = str(e.args[0] if e.args else e).replace("\n", " ")
    sys.exit(f"error: a --config.<key> override names a key the config does not have: "
             f"{detail}. List the keys with python -c \"from experiments.configs.<name> "
             "import get_config; print(get_config('<variant>'))\"")
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --helpshort to see the flags.")
