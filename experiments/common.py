"""Start-up shared by the launchers: platform set-up and readable errors.

A user error (a bad name, flag, path or config value) ends the launcher with one
line, ``error: <what is wrong and the fix>``, and a non-zero exit status;
``GENJAX_TRACEBACK=1`` shows the traceback instead. Other exceptions are bugs and
keep their traceback.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pathlib
import re
import sys
from typing import NoReturn

from absl import app

# The directory holding the ``experiments`` package: relative config paths such
# as experiments/configs/vae.py are also looked up here.
_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The config file that reads a run's config.json (``--config=...:<workdir>``).
_SAVED_CONFIG = pathlib.Path(__file__).resolve().parent / "run_config.py"
_USER_ERRORS = (KeyError, ValueError, TypeError, FileNotFoundError, PermissionError,
                NotADirectoryError, IsADirectoryError)
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def setup() -> None:
  """Joins a multi-process run when asked to; turns on JAX's persistent compilation
  cache in ``~/.cache/genjax/jax_cache`` (unless ``JAX_COMPILATION_CACHE_DIR``
  names another, or ``GENJAX_COMPILATION_CACHE=0``).

  On a TPU pod or a multi-node GPU cluster every host runs the same command with
  ``GENJAX_MULTIHOST=1``: ``jax.distributed.initialize()`` finds the coordinator
  from the cluster's environment. ``GENJAX_COORDINATOR`` (``host:port``),
  ``GENJAX_NUM_PROCESSES`` and ``GENJAX_PROCESS_ID`` name them explicitly, as
  ``python -m experiments.multiprocess`` does for processes on one machine (their
  CPU collectives go through gloo). Only process 0 prints results to stdout.
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
  if os.environ.get("GENJAX_COORDINATOR"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=os.environ["GENJAX_COORDINATOR"],
                               num_processes=int(os.environ["GENJAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["GENJAX_PROCESS_ID"]))
  elif os.environ.get("GENJAX_MULTIHOST", "0") == "1":
    jax.distributed.initialize()
  if jax.process_count() > 1 and jax.process_index() != 0:
    # the launchers' results (eval.json, sample paths, texts) are printed once, by
    # process 0; errors still go to every process's stderr
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # pylint: disable=consider-using-with


def run(main) -> None:
  """``absl.app.run`` that prints a one-line error instead of a traceback for
  the user errors genjax raises (bad names, bad config values, missing data,
  paths it cannot write)."""
  def wrapped(argv):
    try:
      return main(argv)
    except _USER_ERRORS as e:
      if _traceback_wanted():
        raise
      fail(e.args[0] if isinstance(e, KeyError) and e.args else e)
  app.run(wrapped, flags_parser=_parse_flags)


def fail(message) -> NoReturn:
  """Ends the launcher with ``error: <message>`` on stderr and exit status 1."""
  sys.exit(f"error: {message}")


def _traceback_wanted() -> bool:
  return bool(os.environ.get("GENJAX_TRACEBACK"))


# ------------------------------------------------------------------ flags


def _parse_flags(argv):
  """absl's flag parsing, with one-line errors for a config file that does not
  exist, an unknown variant and overrides of keys the config does not have.

  A relative ``--config`` path is looked up in the working directory, then
  beside the ``experiments`` package. ``--workdir=DIR --config.<key>=<value>``
  without ``--config`` overrides the config saved in ``DIR/config.json``.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "config" in flags.FLAGS:
    argv = _config_argv(argv)
    sys.argv = argv  # ml_collections reads the overrides from sys.argv
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError):
    message = None if _traceback_wanted() else _unknown_override(argv)
    if message is None:
      raise
    fail(message)
  except flags.Error as e:
    if _traceback_wanted():
      raise
    fail(_flag_error(str(e)))


def _flag_value(argv, name: str) -> str | None:
  """The value of ``--name=value`` or ``--name value`` (the last one given)."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    m = re.match(rf"^--?{name}(=(.*))?$", arg)
    if m:
      value = m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


def _config_argv(argv: list[str]) -> list[str]:
  """``argv`` with its ``--config`` path resolved, or the run's saved config
  added for overrides given with ``--workdir`` alone."""
  value = _flag_value(argv, "config")
  overrides = [a for a in argv[1:] if _OVERRIDE.match(a)]
  if value is None:
    if not overrides:
      return argv
    workdir = _flag_value(argv, "workdir")
    if workdir and (pathlib.Path(workdir) / "config.json").is_file():
      return [argv[0], f"--config={_SAVED_CONFIG}:{workdir}", *argv[1:]]
    fail(f"{overrides[0].split('=')[0]} overrides a config, but none is given: pass "
         "--config=experiments/configs/<name>.py:<variant>, or the --workdir of a run "
         "(its config.json is the config)")
  path, colon, variant = value.partition(":")
  resolved = _resolve_config_file(path)
  out = []
  skip = False
  for arg in argv:  # every --config=PATH / --config PATH, with PATH resolved
    if skip:
      out.append(f"{resolved}{colon}{variant}")
      skip = False
    elif re.match(r"^--?config=", arg):
      out.append(f"--config={resolved}{colon}{variant}")
    else:
      skip = re.match(r"^--?config$", arg) is not None
      out.append(arg)
  return out


def _resolve_config_file(path: str) -> str:
  """``path`` if it is a file, else the same relative path beside the package."""
  given = pathlib.Path(path).expanduser()
  if given.is_file():
    return path
  if not given.is_absolute() and (_ROOT / given).is_file():
    return str(_ROOT / given)
  names = sorted(p.stem for p in (_ROOT / "experiments" / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common"))
  where = f"in {os.getcwd()}"
  if not given.is_absolute() and pathlib.Path.cwd().resolve() != _ROOT:
    where += f" nor in {_ROOT}"
  fail(f"--config: the config file {path} does not exist ({where}); pass "
       f"--config=experiments/configs/<name>.py:<variant> with <name> one of "
       f"{', '.join(names)}")


def _flag_error(message: str) -> str:
  """One line for an absl flag error; a config file's own ValueError (an
  unknown variant) without the traceback that ml_collections puts in it."""
  if "Error whilst parsing config file" in message:
    last = [line for line in message.splitlines() if line.strip()][-1]
    return re.sub(r"^\w+(Error|Exception): ", "", last.strip())
  return " ".join(message.split()).rstrip(".") + "; pass --helpshort to see the flags"


def _load_config(argv):
  """The config that ``--config`` in ``argv`` names, without its overrides."""
  path, _, variant = (_flag_value(argv, "config") or "").partition(":")
  spec = importlib.util.spec_from_file_location("genjax_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def _unknown_override(argv) -> str | None:
  """The message for the first ``--config.<key>`` override whose key the config
  lacks, naming the closest keys; None if every key exists."""
  if _flag_value(argv, "config") is None:
    return None
  config = _load_config(argv)
  for arg in argv[1:]:
    m = _OVERRIDE.match(arg)
    if m:
      message = _missing_key(config, m.group(1))
      if message is not None:
        return message
  return None


def _missing_key(config, dotted: str) -> str | None:
  node, seen = config, "config"
  for part in dotted.split("."):
    if not hasattr(node, "keys"):
      return (f"--config.{dotted}: {seen} is a value ({node!r}), not a block of keys; "
              f"override {seen} itself")
    if part not in node:
      keys = [f"{seen}.{k}" for k in _closest(part, list(node.keys()))]
      return (f"--config.{dotted}: {seen} has no key {part!r}; the closest keys are "
              f"{', '.join(keys)}")
    node, seen = node[part], f"{seen}.{part}"
  return None


def _closest(word: str, keys: list[str], n: int = 3) -> list[str]:
  """The ``n`` keys nearest ``word``: those holding its letters in order (``lr``
  in ``learning_rate``) first, then those with its first letter, each by
  difflib's similarity."""
  def score(key):
    letters = iter(key)
    in_order = all(c in letters for c in word)
    return (in_order, key[:1] == word[:1],
            difflib.SequenceMatcher(None, word, key).ratio())
  return sorted(keys, key=score, reverse=True)[:n]
