"""Inspection of compiled functions: cost, memory, compile time and IR dumps.

Works on any ``jax.jit``-wrapped function, e.g. the train step of
``genjax.train.compile_train_step``::

  report = genjax.inspection.inspect_jitted(step, state, batch, key, dump_dir="ir")
  print(report.summary())
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Callable

import jax


@dataclasses.dataclass
class Report:
  """What XLA says about one compiled function.

  Attributes:
    lower_seconds: tracing and lowering to StableHLO.
    compile_seconds: XLA compilation.
    flops: floating-point operations per call (XLA's cost analysis), or None.
    bytes_accessed: memory traffic per call (XLA's cost analysis), or None.
    memory: XLA's memory analysis in bytes (arguments, outputs, temporaries,
      generated code, aliased), where the backend gives it.
    files: IR files written (``jaxpr``, ``stablehlo``, ``hlo``).
    compiled: the ``jax.stages.Compiled`` object, to call or inspect further.
  """
  lower_seconds: float
  compile_seconds: float
  flops: float | None
  bytes_accessed: float | None
  memory: dict[str, int]
  files: dict[str, pathlib.Path]
  compiled: Any = dataclasses.field(repr=False, default=None)

  def summary(self) -> str:
    lines = [f"lower time      {self.lower_seconds:9.3f} s",
             f"compile time    {self.compile_seconds:9.3f} s"]
    if self.flops is not None:
      lines.append(f"FLOPs / call    {self.flops:13.4e}")
    if self.bytes_accessed is not None:
      lines.append(f"bytes accessed  {self.bytes_accessed:13.4e}")
    for k, v in self.memory.items():
      lines.append(f"memory {k:<24s} {v / 2**20:10.2f} MiB")
    for k, v in self.files.items():
      lines.append(f"wrote {k:<8s} {v}")
    return "\n".join(lines)


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX returned one dict per device
    cost = cost[0] if cost else {}
  return dict(cost or {})


def _memory(compiled) -> dict[str, int]:
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend has it)
    return {}
  if mem is None:
    return {}
  out = {}
  for name in ("argument_size_in_bytes", "output_size_in_bytes",
               "temp_size_in_bytes", "generated_code_size_in_bytes",
               "alias_size_in_bytes"):
    if hasattr(mem, name):
      out[name.replace("_size_in_bytes", "")] = int(getattr(mem, name))
  return out


# Dense bfloat16 peak TFLOP/s of one device, by a substring of its device_kind.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "B200": 2250.0, "A100": 312.0,
               "L4": 121.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5p": 459.0,
               "TPU v5": 459.0, "TPU v6 lite": 918.0}


def peak_tflops(device_kind: str) -> float | None:
  """The dense bfloat16 peak of a known accelerator (`PEAK_TFLOPS`), else None."""
  for name, peak in PEAK_TFLOPS.items():
    if name in device_kind:
      return peak
  return None


def inspect_jitted(fn: Callable, *args, dump_dir: str | pathlib.Path | None = None,
                   name: str = "step", **kwargs) -> Report:
  """Lowers and compiles ``fn(*args, **kwargs)`` and reports what XLA says.

  Args:
    fn: a ``jax.jit``-wrapped function.
    *args: example arguments (arrays or ``jax.ShapeDtypeStruct``s).
    dump_dir: when given, writes ``<name>.jaxpr.txt``, ``<name>.stablehlo.mlir``
      and ``<name>.hlo.txt`` (the optimized HLO) there.
    name: file name prefix for the dumps.
    **kwargs: example keyword arguments.

  Returns:
    A `Report`.
  """
  if not hasattr(fn, "lower"):
    raise TypeError(f"{fn!r} is not a jitted function; wrap it with jax.jit first")
  t0 = time.perf_counter()
  traced = fn.trace(*args, **kwargs)
  lowered = traced.lower()
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  cost = _cost(compiled)
  files = {}
  if dump_dir is not None:
    d = pathlib.Path(dump_dir)
    d.mkdir(parents=True, exist_ok=True)
    for kind, suffix, text in (("jaxpr", "jaxpr.txt", lambda: str(traced.jaxpr)),
                               ("stablehlo", "stablehlo.mlir", lowered.as_text),
                               ("hlo", "hlo.txt", compiled.as_text)):
      path = d / f"{name}.{suffix}"
      path.write_text(text())
      files[kind] = path
  return Report(lower_seconds=t1 - t0, compile_seconds=t2 - t1,
                flops=cost.get("flops"), bytes_accessed=cost.get("bytes accessed"),
                memory=_memory(compiled), files=files, compiled=compiled)


def time_chained(fn: Callable, carry: Any, *args, num_calls: int = 20,
                 warmup: int = 3) -> tuple[float, Any]:
  """Seconds per call of ``carry, _ = fn(carry, *args)`` run back to back.

  This is how a train step runs (its state donated and fed to the next call), so
  the time includes dispatch but not compilation (done in the warm-up calls).

  Returns:
    ``(seconds per call, final carry)``.
  """
  for _ in range(warmup):
    carry, out = fn(carry, *args)
  jax.block_until_ready((carry, out))
  t0 = time.perf_counter()
  for _ in range(num_calls):
    carry, out = fn(carry, *args)
  jax.block_until_ready((carry, out))
  return (time.perf_counter() - t0) / num_calls, carry
