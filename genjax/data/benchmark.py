"""Prints how fast the data pipeline prepares, loads and serves batches.

  python -m genjax.data.benchmark --dataset=mnist --view=binarized \
      --batch_size=128 [--data_dir=DIR] [--mnist_dir=DIR] [--step_ms=3]

``--step_ms`` simulates a train step that releases the GIL (as a compiled JAX
step does) to show how much of the pipeline's cost the prefetch thread hides.
"""

from __future__ import annotations

import argparse
import time

from genjax.data import pipeline


def _rate(it, batch_size: int, num_batches: int, step_s: float) -> float:
  for _ in range(5):  # Warm up (first epoch permutation, thread start).
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
    if step_s:
      time.sleep(step_s)
  return num_batches * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
  """Runs the benchmark and prints one line per measurement."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="mnist", choices=pipeline.DATASETS)
  parser.add_argument("--view", default="binarized", choices=pipeline.VIEWS)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--num_batches", type=int, default=500)
  parser.add_argument("--step_ms", type=float, default=0.0)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--mnist_dir", default=None)
  args = parser.parse_args(argv)
  kw = dict(data_dir=args.data_dir, mnist_dir=args.mnist_dir)

  start = time.perf_counter()
  pipeline.source(args.dataset, "train", **kw)
  print(f"prepare (if needed) + open: {time.perf_counter() - start:.2f} s")
  start = time.perf_counter()
  arrays = pipeline.load_arrays(args.dataset, "train", **kw)
  seconds = time.perf_counter() - start
  print(f"read train split through the data source: {seconds:.2f} s "
        f"({len(arrays['label'])} examples)")
  src = pipeline.source(args.dataset, "train", **kw)
  start = time.perf_counter()
  n = min(len(src), 2000)
  for i in range(n):
    src[i]  # pylint: disable=pointless-statement
  print(f"data source __getitem__: "
        f"{(time.perf_counter() - start) / n * 1e6:.1f} us per record")

  for prefetch in (0, 4):
    it = pipeline.train_iterator(
        args.dataset, batch_size=args.batch_size, view=args.view, seed=0,
        shard_index=0, shard_count=1, prefetch=prefetch, **kw)
    rate = _rate(it, args.batch_size, args.num_batches, args.step_ms * 1e-3)
    print(f"train_iterator view={args.view} batch={args.batch_size} "
          f"prefetch={prefetch} step_ms={args.step_ms}: {rate:,.0f} examples/s")

  pipeline.load_arrays(args.dataset, "test", **kw)  # Not part of the timing.
  start = time.perf_counter()
  count = sum(len(b["label"]) for b in pipeline.eval_batches(
      args.dataset, "test", batch_size=args.batch_size, view=args.view,
      shard_index=0, shard_count=1, **kw))
  print(f"eval_batches test pass: {count / (time.perf_counter() - start):,.0f} "
        "examples/s")


if __name__ == "__main__":
  main()
