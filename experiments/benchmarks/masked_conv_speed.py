r"""The causal 3x3 mask-B convolution against constructions that skip its zero tap.

  python -m experiments.benchmarks.masked_conv_speed [--batch_size=64] [--size=28] \
      [--channels=32,64,128] [--repeats=5]

A PixelCNN's 3x3 mask-B layer (`genjax.nn.masked.causal`) stores only the kernel
rows up to its anchor, 2x3 taps, of which 5 are non-zero: the tap right of the
anchor is masked (its anchor tap is masked channel by channel, and kept). That
layer as the library runs it (``library``: XLA's direct convolution of the 2x3
kernel, the kernel gradient by Winograd where `genjax.nn.winograd.choose_plan`
says so) is timed against three ways of computing only the 5 non-zero taps:

* ``rows``: the row above as a 1x3 convolution of the input shifted down a row,
  plus the current row as a 1x2 convolution;
* ``concat``: the 5 shifted views of the input side by side, one matrix product
  with the ``[5 I, O]`` kernel;
* ``taps``: one matrix product per tap, summed.

Each is checked equal to the library's layer (forward, input and kernel
gradient) and timed forward, and forward plus both gradients, compiled once,
median of ``--repeats`` calls. FLOPs are the 5 non-zero taps' (the library
multiplies 6).

Time is a measurement of the machine it runs on: run it alone on an idle machine.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import common
from experiments.benchmarks import measure

_TAPS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))  # the non-zero (row, column) taps of 2x3
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _BATCH, _SIZE, _CHANNELS, _REPEATS  # pylint: disable=global-statement
  _BATCH = flags.DEFINE_integer("batch_size", 64, "images per call", lower_bound=1)
  _SIZE = flags.DEFINE_integer("size", 28, "height (= width) of the maps", lower_bound=2)
  _CHANNELS = flags.DEFINE_list("channels", ["32", "64", "128"], "input (= output) channels")
  _REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median)",
                                  lower_bound=1)


def _shifted(x, row: int, col: int):
  """The input that tap ``(row, col)`` of the 2x3 kernel reads at every output."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  _, h, w, _ = x.shape
  return jnp.pad(x, ((0, 0), (1, 0), (1, 1), (0, 0)))[:, row:row + h, col:col + w]


def skipping_convs():
  """``{name: (x, kernel_2x3) -> y}``: the constructions that skip the zero tap."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def rows(x, k):
    above = jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    y = jax.lax.conv_general_dilated(above, k[:1], (1, 1), ((0, 0), (1, 1)),
                                     dimension_numbers=_DIMENSIONS)
    return y + jax.lax.conv_general_dilated(x, k[1:, :2], (1, 1), ((0, 0), (1, 0)),
                                            dimension_numbers=_DIMENSIONS)

  def concat(x, k):
    views = jnp.concatenate([_shifted(x, r, c) for r, c in _TAPS], axis=-1)
    return views @ jnp.concatenate([k[r, c] for r, c in _TAPS], axis=0)

  def taps(x, k):
    return sum(_shifted(x, r, c) @ k[r, c] for r, c in _TAPS)

  return {"rows": rows, "concat": concat, "taps": taps}


def main(argv):
  del argv
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from genjax.nn import masked  # pylint: disable=g-import-not-at-top
  common.setup()
  t_start, load = time.perf_counter(), os.getloadavg()[0]
  b, s = _BATCH.value, _SIZE.value
  print(f"{'channels':>8} {'construction':<12} {'fwd ms':>8} {'fwd+bwd ms':>11} "
        f"{'GFLOP/s':>8} {'max rel err':>12}", flush=True)
  for c in (int(v) for v in _CHANNELS.value):
    layer = masked.causal(c, c, 3, "B", rngs=nnx.Rngs(0))
    kernel = layer.kernel[...] * layer.mask()
    x = jax.random.normal(jax.random.key(1), (b, s, s, c))
    cotangent = jax.random.normal(jax.random.key(2), (b, s, s, c))

    graphdef, state = nnx.split(layer)

    def library(x, k, graphdef=graphdef, state=state):
      values = nnx.to_pure_dict(state)
      values["kernel"] = k  # the layer with kernel k (its bias is zero)
      fresh = jax.tree.map(lambda v: v, state)
      nnx.replace_by_pure_dict(fresh, values)
      return nnx.merge(graphdef, fresh)(x)

    flops = 2 * b * s * s * len(_TAPS) * c * c
    reference = None
    for name, fn in {"library": library, **skipping_convs()}.items():
      forward = jax.jit(fn)

      def output_and_gradients(x, k, fn=fn):
        y, vjp = jax.vjp(fn, x, k)
        return (y, *vjp(cotangent))

      both = jax.jit(output_and_gradients)
      outs = [np.asarray(o) for o in both(x, kernel)]
      outs[2] = outs[2] * layer.mask()  # the zero tap's gradient is masked away
      if reference is None:
        reference = outs
      err = max(float(np.max(np.abs(o - r)) / np.max(np.abs(r)))
                for o, r in zip(outs, reference))
      fwd, total = (measure.median_ms(f, x, kernel, repeats=_REPEATS.value)
                    for f in (forward, both))
      print(f"{c:>8} {name:<12} {fwd:>8.1f} {total:>11.1f} "
            f"{3 * flops / total / 1e6:>8.1f} {err:>12.1e}", flush=True)
  print(f"(batch {b}, {s}x{s}, float32; {measure.cpu_model()}; "
        f"{jax.devices()[0].device_kind}; load {load:.2f} at the start; "
        f"{time.perf_counter() - t_start:.0f} s wall)")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
