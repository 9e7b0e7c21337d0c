r"""Time of a 3x3 SAME convolution, direct (``lax.conv``) against Winograd, by shape.

  python -m experiments.benchmarks.conv_speed [--batch_size=64] [--sizes=28,14,7] \
      [--channels=16,32,64,128] [--tiles=2,4] [--repeats=5]

For each spatial size and channel count (input = output channels), times the
three products of a train step's convolution separately: the forward pass, the
input gradient and the kernel gradient, each directly (``lax``) and by Winograd
F(m x m, 3 x 3) for each ``--tiles``, compiled once, median of ``--repeats``
calls; then the whole forward-and-backward pass of the direct convolution against
`genjax.nn.winograd.conv3x3` with the plan `genjax.nn.winograd.choose_plan` picks
for that shape on this backend. The per-product table is where the plan's rule
comes from; the last columns check it.

Time is a measurement of the machine it runs on: run it alone on an idle machine.
"""

from __future__ import annotations

import time

from absl import flags

from experiments import common
from experiments.benchmarks import measure


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _BATCH, _SIZES, _CHANNELS, _TILES, _REPEATS  # pylint: disable=global-statement
  _BATCH = flags.DEFINE_integer("batch_size", 64, "images per call")
  _SIZES = flags.DEFINE_list("sizes", ["28", "14", "7"], "heights (= widths) of the maps")
  _CHANNELS = flags.DEFINE_list("channels", ["16", "32", "64", "128"],
                                "input (= output) channels")
  _TILES = flags.DEFINE_list("tiles", ["2", "4"], "Winograd output tiles m to time")
  _REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median)")


def main(argv):
  del argv
  import functools  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genjax.nn import winograd  # pylint: disable=g-import-not-at-top
  common.setup()
  t_start = time.perf_counter()
  tiles = [int(t) for t in _TILES.value]
  device = jax.devices()[0]
  print(f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; batch {_BATCH.value}, float32, "
        f"median of {_REPEATS.value} calls, ms")
  names = ["direct"] + [f"F({m},3)" for m in tiles]
  print(f"{'HxW':>6} {'C':>4} {'product':>11}" + "".join(f" {n:>8}" for n in names)
        + f" {'best':>7}")

  for size in map(int, _SIZES.value):
    for c in map(int, _CHANNELS.value):
      x = jax.random.normal(jax.random.key(0), (_BATCH.value, size, size, c))
      k = jax.random.normal(jax.random.key(1), (3, 3, c, c)) / (9 * c) ** 0.5
      g = jax.random.normal(jax.random.key(2), x.shape)
      products = {
          "forward": lambda t: jax.jit(lambda x, k, g: winograd.conv3x3(x, k, (t, 0, 0))),
          "input grad": lambda t: jax.jit(lambda x, k, g: jax.vjp(
              lambda x: winograd.conv3x3(x, k, (0, t, 0)), x)[1](g)[0]),
          "kernel grad": lambda t: jax.jit(lambda x, k, g: jax.vjp(
              lambda k: winograd.conv3x3(x, k, (0, 0, t)), k)[1](g)[0]),
      }
      for product, make in products.items():
        ms = dict(zip(names, (measure.median_ms(make(t), x, k, g, repeats=_REPEATS.value)
                              for t in [0] + tiles)))
        best = min(ms, key=ms.get)
        print(f"{size:>3}x{size:<2} {c:>4} {product:>11}"
              + "".join(f" {v:8.2f}" for v in ms.values()) + f" {best:>7}", flush=True)
      plan = winograd.choose_plan(x.shape, k.shape)
      step = lambda conv: jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2),
                                           argnums=(0, 1)))
      direct = measure.median_ms(step(winograd.direct3x3), x, k, repeats=_REPEATS.value)
      if plan is None:
        print(f"{size:>3}x{size:<2} {c:>4} {'fwd+bwd':>11} {direct:8.2f}  plan: direct",
              flush=True)
      else:
        planned = measure.median_ms(step(functools.partial(winograd.conv3x3, plan=plan)), x,
                                    k, repeats=_REPEATS.value)
        print(f"{size:>3}x{size:<2} {c:>4} {'fwd+bwd':>11} {direct:8.2f}  plan "
              f"{tuple(plan)}: {planned:.2f} ({direct / planned:.2f}x)", flush=True)
  print(f"(load {os.getloadavg()[0]:.2f} at the end; {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
