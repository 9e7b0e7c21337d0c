r"""Every image family on 8-bit MNIST with the same wall-clock budget: one table, plots.

  python -m experiments.benchmarks.compare --workdir=runs/compare --budget_minutes=60 \
      [--families=vae,glow,...] [--gan_seeds=0,1,2] [--num_metric_samples=10000]

For each family (`FAMILIES`: its 8-bit MNIST config variant), trains in
``WORKDIR/<family>`` (the GAN once per seed, in ``WORKDIR/dcgan/seed_<s>``) for
as many steps as fit ``--budget_minutes`` of this machine's time, calibrated
from the compiled train step's measured time (`measure.calibrated_steps`; the
schedules, e.g. cosine decay, then span the whole run), and evaluates every
family the same way:

* parameters, train steps, examples/s and the training wall time;
* the test log-likelihood in bits/dim on the 8-bit test images, from the
  launcher's final evaluation on all 10,000 test images: exact for flows (of the
  dequantised density) and autoregressive models, a lower bound for the VAE (the
  single-sample ELBO) and diffusion (the VDM bound, one time draw per image),
  none for the GAN;
* FID, KID, precision and recall (`genjax.metrics`, the genjax MNIST classifier's
  features) of ``--num_metric_samples`` samples against as many test images;
* sampling images/s at batch 1 and 64 of the fastest exact sampler (cached for
  the pixel models; DDIM with ``--diffusion_steps`` steps for diffusion, also
  the sampler of its FID);
* for the GAN, each seed's numbers, their mean and spread, and how many diverged
  (stopped on a non-finite loss).

Writes ``compare.json``, ``compare.md`` and, with matplotlib installed (the
``plots`` extra), ``fid_vs_speed.png``, ``learning_curves.png`` and
``samples.png``. It resumes: a finished family (its ``compare.json`` row in its
run directory) is not trained or evaluated again, an interrupted one resumes from
its newest checkpoint with the step count calibrated before. Progress lines name
the family, its step (the launcher's own lines) and the whole comparison's ETA.
"""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

from absl import flags

from experiments import common
from experiments.benchmarks import measure

# name -> (config module, variant): each family's 8-bit MNIST recipe.
FAMILIES = {
    "vae": ("vae", "mnist8bit"),
    "realnvp": ("realnvp", "mnist"),
    "glow": ("glow", "mnist"),
    "pixelcnn": ("pixelcnn", "mnist8bit"),
    "gated_pixelcnn": ("gated_pixelcnn", "mnist8bit"),
    "pixelcnn_pp": ("pixelcnn_pp", "mnist"),
    "pixelrnn": ("pixelrnn", "mnist8bit"),
    "dcgan": ("dcgan", "mnist_small"),  # a quarter of mnist's FLOPs: 3-4x the steps
    "diffusion": ("diffusion", "mnist"),
}
GAN = "dcgan"
# Published 8-bit MNIST test bits/dim, placed beside ours.
ANCHORS = {"realnvp": "1.06 (Dinh et al. 2017)", "glow": "1.05 (Kingma & Dhariwal 2018)"}
GRID = 16  # samples per family in samples.png



def family_config(name: str, *, smoke: bool = False, seed: int = 0):
  """The config of family ``name`` in the comparison (``smoke``: its smoke model)."""
  if name not in FAMILIES:
    raise ValueError(f"unknown family {name!r} in --families; choose from "
                     f"{', '.join(FAMILIES)}")
  module, variant = FAMILIES[name]
  c = importlib.import_module(f"experiments.configs.{module}").get_config(
      "smoke" if smoke else variant)
  c.seed = seed
  c.data.name = "mnist"
  c.data.view = "8bit"
  if "view" in c.model:
    c.model.view = "8bit"
  c.model.input_shape = ()
  if "likelihood" in c.model and c.model.likelihood == "bernoulli":
    c.model.likelihood = ("categorical" if name in ("pixelcnn", "gated_pixelcnn", "pixelrnn")
                          else "discretized_logistic")
  c.eval_every = 0     # one evaluation, at the end (the learning curves use train rows)
  c.sample_every = 0
  return c


def _size_run(c, total_steps: int) -> None:
  """Logging, checkpoints and warm-up scaled to a run of ``total_steps``."""
  c.total_steps = total_steps
  c.log_every = max(1, total_steps // 50)
  c.checkpoint_every = max(1, total_steps // 4)
  c.optimizer.warmup_steps = min(c.optimizer.warmup_steps, max(1, total_steps // 10))


def _host() -> str:
  return f"{measure.cpu_model()}, {os.cpu_count()} cores"


def _num_params(model) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def run_one(name: str, workdir: pathlib.Path, *, budget_minutes: float, seed: int = 0,
            smoke: bool = False, steps: int = 0, num_metric_samples: int = 10_000,
            sample_kwargs: dict | None = None, feature_network=None,
            speed_calls: tuple[int, int] = (5, 2), log: Callable = print) -> dict[str, Any]:
  """Trains (or resumes) and evaluates one run; returns its row (cached in the run).

  The row is written to ``workdir/compare.json`` last, so a row on disk means the
  run is finished and evaluated; calling again returns it without work. Returns
  None when a signal stopped the training (its checkpoint is saved).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import experiment, metrics, rundir  # pylint: disable=g-import-not-at-top
  done = workdir / "compare.json"
  if done.exists():
    return json.loads(done.read_text())
  config = family_config(name, smoke=smoke, seed=seed)
  step_seconds = None
  if (workdir / "config.json").exists():  # a resume keeps its calibrated step count
    total = experiment.load_config(workdir).total_steps
  elif steps:
    total = steps
  else:
    total, step_seconds = measure.calibrated_steps(config, budget_minutes, num_calls=10)
    log(f"compare: {name} (seed {seed}): {step_seconds * 1e3:.0f} ms a step -> "
        f"{total} steps in {budget_minutes:g} min")
  _size_run(config, total)
  t0, load_start = time.time(), os.getloadavg()[0]
  started = f"{datetime.datetime.now():%Y-%m-%d %H:%M}"
  diverged = None
  try:
    result = experiment.train(config, workdir)
    if result.get("stopped_by"):  # SIGINT/SIGTERM: checkpoint saved, evaluate nothing
      return None
  except experiment.NonFiniteLossError as e:
    diverged = str(e).splitlines()[0]
    log(f"compare: {name} (seed {seed}) diverged: {diverged}")
  rows = [r for r in rundir.read_metrics(workdir, "train") if "wall_seconds" in r]
  train_seconds = rows[-1]["wall_seconds"] if rows else time.time() - t0
  row: dict[str, Any] = {
      "family": name, "seed": seed, "config": "%s.py:%s" % FAMILIES[name],
      "budget_minutes": budget_minutes, "total_steps": total,
      "calibrated_step_seconds": step_seconds, "train_minutes": train_seconds / 60,
      "examples_per_sec": float(np.median([r["examples_per_sec"] for r in rows]))
                          if rows else None,
      "diverged": diverged or False,
      # rows of one table may come from several calls (it resumes): each keeps its own
      # conditions (a resumed run: those of the call that finished it)
      "trained": started, "host": _host(), "load_average": [load_start, os.getloadavg()[0]],
      "curve": [[r["wall_seconds"] / 60, r["bits_per_dim"]] for r in rows
                if "bits_per_dim" in r and math.isfinite(r["bits_per_dim"])],
  }
  try:
    family, model, run_config, step = experiment.restore_model(workdir)
  except FileNotFoundError:  # diverged before its first checkpoint: nothing to evaluate
    done.write_text(json.dumps(row, indent=2) + "\n")
    return row
  row.update(step=step, params=_num_params(model),
             likelihood=getattr(family, "LIKELIHOOD", "exact"))
  final = rundir.logged_eval(workdir, step) if experiment.has_likelihood(family) else None
  if final and "bits_per_dim" in final:
    row["test_bits_per_dim"] = final["bits_per_dim"]
  t0 = time.time()
  kw = dict(data_dir=run_config.data.data_dir or None,
            mnist_dir=run_config.data.mnist_dir or None)
  real = measure.mnist_images(run_config, "8bit")
  row.update(metrics.models.evaluate_samples(
      family, model, real, num=num_metric_samples, key=jax.random.key(seed + 1),
      binary=False, sample_kwargs=sample_kwargs, network=feature_network, **kw))
  row["sample_kwargs"] = sample_kwargs or {}
  for num, calls in zip((1, 64), speed_calls):
    speed = measure.sampling_speed(family, model, num, calls=calls,
                                   sample_kwargs=sample_kwargs)
    row[f"images_per_sec_batch{num}"] = speed["images_per_sec"]
  grid = np.asarray(family.sample(model, jax.random.key(1234), num=GRID,
                                  **(sample_kwargs or {})))
  np.save(workdir / "samples.npy", grid)
  row["eval_minutes"] = (time.time() - t0) / 60
  row["device"] = jax.devices()[0].device_kind
  done.write_text(json.dumps(row, indent=2) + "\n")
  return row


def _mean_sd(values) -> tuple[float, float]:
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return float("nan"), float("nan")
  mean = sum(values) / len(values)
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
  return mean, sd


def summarize(rows: list[dict]) -> list[dict]:
  """One row per family; the GAN's seeds become means, spreads and a divergence count."""
  out, seen = [], set()
  for r in rows:
    if r["family"] in seen:
      continue
    seen.add(r["family"])
    seeds = [s for s in rows if s["family"] == r["family"]]
    if len(seeds) == 1:
      out.append(dict(r, num_seeds=1, num_diverged=int(bool(r["diverged"]))))
      continue
    row = dict(seeds[0], seed=None, num_seeds=len(seeds),
               num_diverged=sum(bool(s["diverged"]) for s in seeds))
    for key in ("fid", "kid", "precision", "recall", "images_per_sec_batch1",
                "images_per_sec_batch64", "examples_per_sec", "train_minutes"):
      row[key], row[key + "_sd"] = _mean_sd([s.get(key) for s in seeds])
    out.append(row)
  return out


def _fmt(v, spec: str, sd=None) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "-"
  text = format(v, spec)
  return text + (f" ± {format(sd, spec)}" if sd is not None and math.isfinite(sd) else "")


def _likelihood_kind(r: dict) -> str:
  if r["family"] == GAN:
    return "none (implicit model)"
  if r["family"] == "vae":
    return "bound (ELBO)"
  if r["family"] == "diffusion":
    return "bound (VDM)"
  if r["family"] in ("realnvp", "glow"):
    return "exact (dequantised)"
  return "exact"


def markdown(summary: list[dict], meta: dict, rows: list[dict] = ()) -> str:
  """The comparison table (one row per family) with its conditions and notes."""
  lines = [
      f"Every family on 8-bit MNIST, {meta['budget_minutes']:g} training minutes each "
      f"({meta['device']}, {meta['host']}); {meta['num_metric_samples']} samples per "
      f"sample metric against as many test images; written {meta['written']}, "
      f"{meta['run_minutes']:.0f} min of training and evaluation in all; this call "
      f"{meta['wall_minutes']:.0f} min wall, load {meta['load_average'][0]:.1f} at the "
      f"start and {meta['load_average'][1]:.1f} at the end.", "",
      "| family | params | steps | train ex/s | test bits/dim | likelihood | paper "
      "bits/dim | FID | KID | precision | recall | img/s batch 1 | img/s batch 64 |",
      "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|"]
  for r in summary:
    name = r["family"] + (f" ({r['num_seeds']} seeds, {r['num_diverged']} diverged)"
                          if r["num_seeds"] > 1 else "")
    if r["family"] == "diffusion" and r.get("sample_kwargs"):
      name += f" (DDIM {r['sample_kwargs'].get('steps')})"
    lines.append(
        f"| {name} | {_fmt(r.get('params'), ',')} | {_fmt(r.get('step'), ',')} | "
        f"{_fmt(r.get('examples_per_sec'), '.0f')} | "
        f"{_fmt(r.get('test_bits_per_dim'), '.4f')} | {_likelihood_kind(r)} | "
        f"{ANCHORS.get(r['family'], '-')} | {_fmt(r.get('fid'), '.1f', r.get('fid_sd'))} | "
        f"{_fmt(r.get('kid'), '.2f', r.get('kid_sd'))} | "
        f"{_fmt(r.get('precision'), '.3f', r.get('precision_sd'))} | "
        f"{_fmt(r.get('recall'), '.3f', r.get('recall_sd'))} | "
        f"{_fmt(r.get('images_per_sec_batch1'), '.1f')} | "
        f"{_fmt(r.get('images_per_sec_batch64'), '.1f')} |")
  lines += ["", "Bits/dim are on the discrete 8-bit test images (all 10,000), from each "
            "run's final evaluation; FID and KID use genjax's MNIST classifier's features "
            "(lower is better), so they are comparable across these rows but not with "
            "Inception-feature FIDs. Sampling speed is the fastest exact sampler of each "
            "family (cached for the pixel models), compile excluded."]
  runs = [r for r in rows if "trained" in r]
  if len({(r["trained"][:10], r["host"]) for r in runs}) > 1:  # gathered over several calls
    lines += ["", "Each run's training, as the table gathers runs of several calls: " + "; ".join(
        f"{r['run']} on {r['trained']} ({r['host']}, load {r['load_average'][0]:.1f} to "
        f"{r['load_average'][1]:.1f})" for r in runs) + "."]
  return "\n".join(lines) + "\n"


def plots(summary: list[dict], rows: list[dict], root: pathlib.Path) -> list[pathlib.Path]:
  """``fid_vs_speed.png``, ``learning_curves.png`` and ``samples.png`` in ``root``."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  paths = []

  fig, ax = plt.subplots(figsize=(5.5, 4))
  for r in summary:
    if r.get("fid") is None or r.get("images_per_sec_batch64") is None:
      continue
    ax.errorbar(r["images_per_sec_batch64"], r["fid"], yerr=r.get("fid_sd") or None,
                fmt="o", capsize=3)
    ax.annotate(r["family"], (r["images_per_sec_batch64"], r["fid"]),
                textcoords="offset points", xytext=(4, 4), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("sampling images/s at batch 64 (log)")
  ax.set_ylabel("FID (genjax MNIST features), lower is better")
  ax.set_title("Sample quality against sampling speed")
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  paths.append(root / "fid_vs_speed.png")
  fig.savefig(paths[-1], dpi=80)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6, 4))
  finals = []
  for r in rows:
    curve = np.asarray(r.get("curve") or [])
    if not len(curve) or r["family"] == GAN:
      continue
    line, = ax.plot(curve[:, 0], curve[:, 1], label=r["family"], lw=1.2)
    if r.get("test_bits_per_dim") is not None:
      ax.plot(curve[-1, 0], r["test_bits_per_dim"], "*", color=line.get_color(), ms=9)
    finals.append(curve[len(curve) // 5:, 1].max())
  if finals:
    low = min(r["test_bits_per_dim"] for r in rows if r.get("test_bits_per_dim"))
    ax.set_ylim(0.9 * min(low, 1.0), max(finals) * 1.05)
  ax.set_xlabel("training wall time (min)")
  ax.set_ylabel("bits/dim (train batches; * = test)")
  ax.set_title("Learning curves on 8-bit MNIST")
  ax.legend(fontsize=7, ncol=2)
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  paths.append(root / "learning_curves.png")
  fig.savefig(paths[-1], dpi=80)
  plt.close(fig)

  grids = [(r["family"], root / r["run"] / "samples.npy") for r in summary]
  grids = [(n, np.load(p)) for n, p in grids if p.exists()]
  if grids:
    fig, axes = plt.subplots(1, len(grids), figsize=(1.6 * len(grids), 1.9), squeeze=False)
    side = int(math.sqrt(GRID))
    for ax, (name, images) in zip(axes[0], grids):
      h, w = images.shape[1:3]
      tiles = images[:side * side, ..., 0].reshape(side, side, h, w)
      ax.imshow(tiles.transpose(0, 2, 1, 3).reshape(side * h, side * w), cmap="gray",
                vmin=0, vmax=255, interpolation="nearest")
      ax.set_title(name, fontsize=8)
      ax.axis("off")
    fig.tight_layout()
    paths.append(root / "samples.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
  return paths


def compare(root: pathlib.Path, families, *, budget_minutes: float, gan_seeds=(0, 1, 2),
            smoke: bool = False, steps: int = 0, num_metric_samples: int = 10_000,
            sample_kwargs: Callable[[str], dict] = lambda name: {},
            feature_network=None, speed_calls: tuple[int, int] = (5, 2),
            log: Callable = print) -> dict[str, Any]:
  """Runs the comparison in ``root``; writes and returns ``compare.json``'s content."""
  import jax  # pylint: disable=g-import-not-at-top
  root.mkdir(parents=True, exist_ok=True)
  for name in families:
    family_config(name)  # unknown names fail before any training
  runs = [(n, s, root / n / f"seed_{s}" if n == GAN else root / n)
          for n in families for s in (gan_seeds if n == GAN else (0,))]
  t_start, load_start = time.time(), os.getloadavg()[0]
  rows, spent = [], []
  for i, (name, seed, workdir) in enumerate(runs):
    finished = (workdir / "compare.json").exists()
    if not finished:
      per_run = (sum(spent) / len(spent) if spent else budget_minutes * 60 * 1.3 + 60)
      left = per_run * sum(not (w / "compare.json").exists() for _, _, w in runs[i:])
      eta = datetime.datetime.now() + datetime.timedelta(seconds=left)
      log(f"compare: [{i + 1}/{len(runs)}] {name}" + (f" seed {seed}" if name == GAN else "")
          + f" | comparison ETA {left / 60:.0f} min (about {eta:%H:%M})")
    t0 = time.time()
    row = run_one(name, workdir, budget_minutes=budget_minutes, seed=seed, smoke=smoke,
                  steps=steps, num_metric_samples=num_metric_samples,
                  sample_kwargs=sample_kwargs(name), feature_network=feature_network,
                  speed_calls=speed_calls, log=log)
    if row is None:
      log(f"compare: stopped during {name}; re-run the same command to resume")
      return {"stopped": name}
    if not finished:
      spent.append(time.time() - t0)
    row["run"] = str(workdir.relative_to(root))
    rows.append(row)
    if finished:
      log(f"compare: [{i + 1}/{len(runs)}] {name} already done ({workdir / 'compare.json'})")
  summary = summarize(rows)
  meta = {"budget_minutes": budget_minutes, "num_metric_samples": num_metric_samples,
          "smoke": smoke, "device": jax.devices()[0].device_kind,
          "host": _host(),
          "written": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
          "wall_minutes": (time.time() - t_start) / 60,  # of this call (resumes skip work)
          "load_average": [load_start, os.getloadavg()[0]],  # 1-minute, start and end
          "run_minutes": sum(r.get("train_minutes", 0) + r.get("eval_minutes", 0)
                             for r in rows)}
  out = {"meta": meta, "families": summary, "runs": rows}
  (root / "compare.json").write_text(json.dumps(out, indent=2) + "\n")
  table = markdown(summary, meta, rows)
  (root / "compare.md").write_text(table)
  try:
    written = plots(summary, rows, root)
  except ImportError:
    log("compare: no plots: matplotlib is not installed (pip install -e '.[plots]')")
  else:
    log("compare: plots in " + ", ".join(str(p) for p in written))
  log(f"compare: table in {root / 'compare.md'}\n\n" + table)
  return out


def _define_flags() -> dict:
  """The command line's flags, defined only when this module is the program.

  Tests import this module beside other benchmarks with a ``--workdir`` of their own;
  flags defined at import time would collide in absl's global registry.
  """
  f = {}
  f["workdir"] = flags.DEFINE_string("workdir", None, "root of the comparison's runs",
                                     required=True)
  f["budget"] = flags.DEFINE_float("budget_minutes", 60.0, "training minutes per family "
                                   "(per seed for the GAN)")
  f["families"] = flags.DEFINE_list("families", list(FAMILIES), "families to compare")
  f["gan_seeds"] = flags.DEFINE_list("gan_seeds", ["0", "1", "2"], "the GAN's training seeds")
  f["num"] = flags.DEFINE_integer("num_metric_samples", 10_000, "samples per sample metric")
  f["diffusion_steps"] = flags.DEFINE_integer("diffusion_steps", 50, "DDIM steps of "
                                              "diffusion's sampler (FID and speed)")
  f["smoke"] = flags.DEFINE_bool("smoke", False, "each family's smoke-sized model on MNIST "
                                 "(a check of the pipeline in minutes, not a comparison)")
  f["steps"] = flags.DEFINE_integer("steps", 0, "train steps per run (overrides the budget)")
  return f


def main(argv, f: dict):
  del argv
  common.setup()
  seeds = tuple(int(s) for s in f["gan_seeds"].value)
  diffusion_steps = f["diffusion_steps"].value

  def sample_kwargs(name: str) -> dict:
    return {"sampler": "ddim", "steps": diffusion_steps} if name == "diffusion" else {}

  compare(pathlib.Path(f["workdir"].value), f["families"].value,
          budget_minutes=f["budget"].value, gan_seeds=seeds, smoke=f["smoke"].value,
          steps=f["steps"].value, num_metric_samples=f["num"].value,
          sample_kwargs=sample_kwargs)


if __name__ == "__main__":
  _flags = _define_flags()
  common.run(lambda argv: main(argv, _flags))
