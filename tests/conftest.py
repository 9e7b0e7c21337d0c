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
# The tests check numbers, not speed, and most of their time is XLA compiling tiny
# programs. XLA:CPU's backend optimisation off took 40% off a cold run (4 test
# files, 214 -> 129 s on two cores); the older fusion emitters, one codegen split
# and copy insertion without region analysis take another 29% off (the PixelCNN++
# and Glow tests, 118 -> 84 s; XLA's compile time 78 -> 45 s). Launcher
# subprocesses inherit them. GENJAX_TEST_XLA_OPTIMIZE=1 keeps XLA's defaults.
_FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0 "
                       "--xla_cpu_use_fusion_emitters=false "
                       "--xla_cpu_parallel_codegen_split_count=1 "
                       "--xla_cpu_copy_insertion_use_region_analysis=false")
if (os.environ.get("GENJAX_TEST_XLA_OPTIMIZE") != "1"
    and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                             _FAST_COMPILE_FLAGS).strip()

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


def _uses_a_module_fixture(item) -> bool:
  info = getattr(item, "_fixtureinfo", None)
  return info is not None and any(
      defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


def pytest_collection_modifyitems(config, items):
  """Long modules first: those with a ``slow`` test (end-to-end launcher runs, 30 s
  or more), then those with a module-scoped fixture (a launcher run its tests
  inspect), then the rest in collection order.

  Under ``--dist loadscope --no-loadscope-reorder`` (pyproject.toml) each module
  runs on one xdist worker, handed out in this order: a long module handed out last
  would run alone at the end while the other worker idles."""
  del config
  rank = {}
  for item in items:
    name = item.module.__name__
    r = 0 if item.get_closest_marker("slow") else 1 if _uses_a_module_fixture(item) else 2
    rank[name] = min(rank.get(name, 2), r)
  items.sort(key=lambda item: rank[item.module.__name__])  # stable
