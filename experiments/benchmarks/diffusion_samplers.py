r"""Quality against speed of a diffusion run's samplers: FID, KID, precision, recall, images/s.

  python -m experiments.benchmarks.diffusion_samplers --workdir=runs/diffusion_mnist \
      [--settings=ancestral:1000,ddim:100,ddim:50,ddim:20,ddim:10] [--num=10000] \
      [--batch_size=500]

Restores the newest checkpoint, and for each ``sampler:steps`` setting draws ``--num``
samples (the moving-average weights, ``fold_in`` keys per batch) with
``genjax.models.diffusion.sample``, timing the draws after one compiled warm-up batch,
then compares them with the first ``--num`` test images through
``genjax.metrics.sample_metrics`` (the MNIST classifier's features). A setting may
carry its own sample count: ``ancestral:1000:500``. Writes
``WORKDIR/samplers.json`` and ``WORKDIR/samplers.svg`` (FID against images per
second, log scale) and prints a Markdown table. Rows of the same checkpoint from
earlier calls are kept unless this call draws their setting again, so the slow
settings can be run one call at a time.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _WORKDIR, _SETTINGS, _NUM, _BATCH, _SEED  # pylint: disable=global-statement
  _WORKDIR = flags.DEFINE_string("workdir", None, "diffusion run directory", required=True)
  _SETTINGS = flags.DEFINE_list(
      "settings", ["ancestral:1000", "ddim:100", "ddim:50", "ddim:20", "ddim:10"],
      "sampler:steps[:num] settings")
  _NUM = flags.DEFINE_integer("num", 10_000, "samples per setting (and real test images)")
  _BATCH = flags.DEFINE_integer("batch_size", 500, "images per compiled sampling call")
  _SEED = flags.DEFINE_integer("seed", 0, "sampling seed")


def parse_settings(items) -> list[tuple[str, int, int | None]]:
  """``["ddim:50", "ancestral:1000:500"]`` -> ``[(sampler, steps, num or None)]``."""
  out = []
  for item in items:
    parts = item.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
      raise ValueError(f"--settings entry {item!r} must be sampler:steps or "
                       "sampler:steps:num (e.g. ddim:50)")
    out.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
  return out


def merge_rows(saved: dict | None, step: int, rows: list[dict]) -> list[dict]:
  """This call's rows, after the saved rows of the same checkpoint step whose
  ``(sampler, steps)`` this call did not draw again: slow settings can be added
  one call at a time. Sorted from the most to the fewest sampler steps."""
  kept = []
  if saved and saved.get("step") == step:
    new = {(r["sampler"], r["steps"]) for r in rows}
    kept = [r for r in saved["rows"] if (r["sampler"], r["steps"]) not in new]
  return sorted(kept + rows, key=lambda r: (-r["steps"], r["sampler"]))


def svg_plot(rows: list[dict], title: str) -> str:
  """A small SVG: FID (y) against images per second (x, log scale), one labelled point
  per setting."""
  w, h, pad = 560, 360, 60
  xs = [math.log10(r["images_per_second"]) for r in rows]
  ys = [r["fid"] for r in rows]
  x0, x1 = min(xs) - 0.2, max(xs) + 0.2
  y1 = max(ys) * 1.15 or 1.0
  px = lambda x: pad + (x - x0) / (x1 - x0) * (w - 2 * pad)  # noqa: E731
  py = lambda y: h - pad - y / y1 * (h - 2 * pad)  # noqa: E731
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle">{title}</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">images per second '
           '(log scale)</text>',
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" '
           'text-anchor="middle">FID (lower is better)</text>']
  for e in range(math.floor(x0), math.ceil(x1) + 1):
    if x0 <= e <= x1:
      parts.append(f'<text x="{px(e)}" y="{h - pad + 16}" text-anchor="middle">'
                   f'{10.0 ** e:g}</text>')
  for i in range(5):
    y = y1 * i / 4
    parts.append(f'<text x="{pad - 6}" y="{py(y) + 4}" text-anchor="end">{y:.0f}</text>')
  order = sorted(range(len(rows)), key=lambda i: xs[i])
  parts.append('<polyline fill="none" stroke="steelblue" points="' +
               " ".join(f"{px(xs[i]):.1f},{py(ys[i]):.1f}" for i in order) + '"/>')
  for r, x, y in zip(rows, xs, ys):
    parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="steelblue"/>')
    parts.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}">{r["sampler"]} '
                 f'{r["steps"]}</text>')
  parts.append("</svg>")
  return "\n".join(parts) + "\n"


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  from genjax import metrics  # pylint: disable=g-import-not-at-top
  from genjax.data import run_data  # pylint: disable=g-import-not-at-top
  common.setup()
  settings = parse_settings(_SETTINGS.value)
  workdir = pathlib.Path(_WORKDIR.value)
  family, model, config, step = experiment.restore_model(workdir)
  if config.model.name != "diffusion":
    raise ValueError(f"{workdir} is a {config.model.name} run; this benchmark compares "
                     "the samplers of a diffusion run")
  data = run_data.for_config(config, workdir)
  real = np.concatenate([b["image"] for b in data.eval_batches("test", 1000,
                                                                experiment.EVAL_SEED)])
  device = jax.devices()[0]
  print(f"diffusion on {config.data.name} (step {step}), {device.device_kind} "
        f"({device.platform}), {jax.device_count()} device(s)", flush=True)
  rows = []
  for sampler, steps, num in settings:
    num = min(num or _NUM.value, len(real))
    kw = {"sampler": sampler, "steps": steps}
    size = min(_BATCH.value, num)
    key = jax.random.key(_SEED.value)
    t0 = time.perf_counter()
    jax.block_until_ready(family.sample(model, jax.random.key(10**6), num=size, **kw))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fake = metrics.models.draw_samples(family, model, key, num, size, kw)
    seconds = time.perf_counter() - t0
    out = metrics.sample_metrics(real[:num], fake,
                                 **experiment._data_kwargs(config))  # pylint: disable=protected-access
    rows.append({"sampler": sampler, "steps": steps, "num": num,
                 "written": time.strftime("%Y-%m-%d %H:%M"),
                 "images_per_second": num / seconds, "sample_seconds": seconds,
                 "compile_seconds": compile_s, **{k: float(v) for k, v in out.items()}})
    print(f"{sampler}:{steps} ({num} samples): FID {out['fid']:.2f}, KID "
          f"{out['kid']:.4f}, precision {out['precision']:.3f}, recall "
          f"{out['recall']:.3f}, {num / seconds:.2f} images/s", flush=True)
  path = workdir / "samplers.json"
  rows = merge_rows(json.loads(path.read_text()) if path.exists() else None, step, rows)
  result = {"workdir": str(workdir), "step": step, "device": device.device_kind,
            "platform": device.platform, "batch_size": _BATCH.value, "rows": rows}
  (workdir / "samplers.json").write_text(json.dumps(result, indent=2) + "\n")
  (workdir / "samplers.svg").write_text(svg_plot(
      rows, f"diffusion on {config.data.name}, step {step}: quality against speed"))
  print("\n| sampler | steps | samples | FID | KID | precision | recall | images/s |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['sampler']} | {r['steps']} | {r['num']} | {r['fid']:.2f} | "
          f"{r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
          f"{r['images_per_second']:.2f} |")
  print(f"\nwritten: {workdir / 'samplers.json'}, {workdir / 'samplers.svg'}")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
