"""Test set-up: four fake CPU devices for the sharding tests, isolated data dirs."""

import os
import tempfile

# Must happen before JAX initialises its backends.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for every test worker and launcher subprocess:
# the same programs (a smoke config's train step, ...) are compiled once per run.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"genjax_test_jax_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A prepared-data cache shared by the tests of one session (never ~/.cache)."""
  path = os.environ.get("GENJAX_TEST_DATA_DIR")
  if path:
    return pathlib.Path(path)
  return tmp_path_factory.mktemp("genjax_data")
