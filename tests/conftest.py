"""Test set-up: four fake CPU devices for the sharding tests, isolated data dirs."""

import os

# Must happen before JAX initialises its backends.
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
