r"""Train-step time, FLOPs and sampling speed of genjax models against PyTorch twins.

  python -m experiments.benchmarks.vs_pytorch \
      [--pairs=pixelcnn,gated_pixelcnn,glow,vae,dcgan,gpt,diffusion] [--batch_size=64] \
      [--rounds=3] [--steps=10] [--warmup=3] [--sample_num=8] [--naive_subpixels=56] \
      [--torch_compile] [--device=cpu|gpu] [--out=FILE.json]
  python -m experiments.benchmarks.vs_pytorch --check [--pairs=...]

Each pair is one genjax config and the same architecture in PyTorch
(`experiments.benchmarks.torch_twins`), trained at ``--batch_size`` on one
synthetic batch (seed 0; the same numpy batch on both sides), float32, Adam (AdamW
where the config says so): MNIST-shaped images (28x28x1, binarized 0/1 or 8-bit
0..255 as the config's data view says), or for ``gpt`` windows of ``block_size + 1``
token ids in its vocabulary, as genjax's text data gives (`synthetic_batch`):

  pixelcnn        pixelcnn.py:mnist        a faithful PyTorch twin (the same masks and
                                           causal kernels, the same loss)
  gated_pixelcnn  gated_pixelcnn.py:mnist  a faithful PyTorch twin
  glow            glow.py:mnist            normflows' MultiscaleFlow built to the same
                                           levels, steps, width and layers
  vae             vae.py:mnist_conv        a faithful PyTorch twin (conv encoder/decoder)
  dcgan           dcgan.py:mnist           a faithful PyTorch twin making the same
                                           updates (D step, G step, generator EMA)
  gpt             gpt.py:shakespeare_char  Hugging Face transformers' GPT2LMHeadModel
                                           from a GPT2Config of the same architecture
                                           (vocabulary 85: the characters of the
                                           Shakespeare run, `GPT_VOCAB_SIZE`), AdamW
  diffusion       diffusion.py:mnist       denoising-diffusion-pytorch's Unet at the
                                           same widths per resolution, trained by its
                                           GaussianDiffusion (pred_noise MSE; genjax's
                                           step is its config's variational bound),
                                           with a moving average of the weights

It prints both sides' parameter counts (a warning line when they differ by more
than 5%) and FLOPs per train step: XLA's cost analysis of the compiled genjax step
(every operation, the optimizer included) and ``torch.utils.flop_counter``'s count
of one PyTorch step (matrix products and convolutions, forward and backward).
Timing: each side runs in a fresh process (the script calls itself with
``--worker=...``); ``--rounds`` rounds alternate which side goes first; each
process runs ``--warmup`` untimed steps (compilation included) and then times
``--steps`` steps one by one (synchronised), and the table shows the median step
of all rounds and the ratio genjax / PyTorch. PyTorch runs eagerly with
channels-first tensors and ``torch.set_num_threads(os.cpu_count())``;
``--torch_compile`` adds a ``torch.compile`` column (a failure is reported, not
raised). genjax's step also computes gradient, parameter and update norms and
skips non-finite updates; the PyTorch steps do neither.

Sampling (pixel models): genjax's cached sampler (``family.sample(...,
method="cached")``, O(layers * kernel) per sub-pixel) against the PyTorch twin's
naive sampler (the whole network per sub-pixel, as a PyTorch user writes it) for
``--sample_num`` images; the naive sampler is timed over its first
``--naive_subpixels`` sub-pixels and scaled to the whole image (each costs one
whole-network pass).

Useful FLOP/s: genjax's XLA FLOPs over its median step time, also as a
percentage of a float32 matrix product's speed that the script measures
(``jnp.matmul`` of 2048x2048 on a CPU, 8192x8192 on a GPU, fastest of 10 calls).
``--out`` writes every number with the hardware, the package versions, the load
average at the start and the end, and the wall time. ``--device=gpu`` runs both
sides on a GPU (JAX's gpu backend, torch's cuda); on a GPU each framework uses
its float32 default (both may use TF32 in convolutions).

``--check`` does no timing: for each pair it prints both parameter counts and
both losses at initialisation on the same batch (finite, and of the same
magnitude where both sides compute the same loss; for ``gpt`` both within 10% of
``ln(vocabulary)``, the loss of a uniform prediction), and for the pixel models
loads genjax's weights into the twin and requires the same loss to a relative
1e-4 and the same logits.

Time is a measurement of the machine it runs on: run it alone on an idle
machine, not under ``nice`` beside other work. It needs the ``bench`` extra:
``pip install -e ".[bench]"`` (torch, normflows, transformers and
denoising-diffusion-pytorch; a pair needs only torch and its own package, so
``--pairs`` may leave out the pairs whose package is missing).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np
from absl import flags

from experiments import common
from experiments.benchmarks import measure


@dataclasses.dataclass(frozen=True)
class Pair:
  """A genjax config and its PyTorch counterpart."""
  config: str  # experiments/configs/<config>.py
  variant: str
  peer: str  # the PyTorch side, in words
  sampler: bool = False  # a pixel model: cached against naive sampling is timed
  modules: tuple[str, ...] = ()  # what the PyTorch side imports besides torch
  same_loss: bool = True  # both sides compute the same loss (so of the same magnitude)


PAIRS = {
    "pixelcnn": Pair("pixelcnn", "mnist", "PyTorch twin", sampler=True),
    "gated_pixelcnn": Pair("gated_pixelcnn", "mnist", "PyTorch twin", sampler=True),
    "glow": Pair("glow", "mnist", "normflows", modules=("normflows",)),
    "vae": Pair("vae", "mnist_conv", "PyTorch twin"),
    "dcgan": Pair("dcgan", "mnist", "PyTorch twin"),
    "gpt": Pair("gpt", "shakespeare_char", "transformers GPT2LMHeadModel",
                modules=("transformers",)),
    "diffusion": Pair("diffusion", "mnist", "denoising-diffusion-pytorch Unet",
                      modules=("denoising_diffusion_pytorch",), same_loss=False),
}
MNIST_SHAPE = (28, 28, 1)
# The character vocabulary of gpt.py:shakespeare_char on the Shakespeare works (84
# characters and <unk>; 812,416 parameters, as the README's run): the tokenizer
# comes from the text, which the benchmark does not read.
GPT_VOCAB_SIZE = 85
TOKEN_LOSS_TOLERANCE = 0.1  # relative distance of gpt's first losses from ln(vocabulary)
PARAMS_TOLERANCE = 0.05  # relative difference of the parameter counts
_SIDES = ("genjax", "torch")
_RESULT = "vs_pytorch result: "  # the prefix of a worker's JSON line
_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _PAIRS, _BATCH, _ROUNDS, _STEPS, _WARMUP, _SAMPLE_NUM
  global _NAIVE_SUBPIXELS, _TORCH_COMPILE, _DEVICE, _OUT, _CHECK, _WORKER, _EXTRAS
  _PAIRS = flags.DEFINE_list("pairs", list(PAIRS), f"pairs to run, of {', '.join(PAIRS)}")
  _BATCH = flags.DEFINE_integer("batch_size", 64, "examples per train step", lower_bound=1)
  _ROUNDS = flags.DEFINE_integer("rounds", 3, "rounds of one process per side", lower_bound=1)
  _STEPS = flags.DEFINE_integer("steps", 10, "timed train steps per round and side",
                                lower_bound=1)
  _WARMUP = flags.DEFINE_integer("warmup", 3, "untimed steps first (compilation included)",
                                 lower_bound=1)
  _SAMPLE_NUM = flags.DEFINE_integer("sample_num", 8, "images per sampling call of the pixel "
                                     "models (0: no sampling)", lower_bound=0)
  _NAIVE_SUBPIXELS = flags.DEFINE_integer(
      "naive_subpixels", 56, "sub-pixels the PyTorch naive sampler draws while timed; its "
      "images/s are scaled to the whole image", lower_bound=1)
  _TORCH_COMPILE = flags.DEFINE_bool("torch_compile", False, "add a torch.compile column")
  _DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "where both sides run")
  _OUT = flags.DEFINE_string("out", None, "write every number to this JSON file")
  _CHECK = flags.DEFINE_bool("check", False, "check the twins at initialisation; no timing")
  _WORKER = flags.DEFINE_enum("worker", None, ["genjax", "torch", "torch_compile", "gemm"],
                              "internal: run one side of one pair and print its numbers")
  _EXTRAS = flags.DEFINE_bool("worker_extras", True,
                              "internal: the worker also counts FLOPs and times sampling")


class WorkerError(RuntimeError):
  """A worker process ended without printing its numbers."""


def parse_pairs(names) -> list[str]:
  """The pairs of ``--pairs``, checked.

  Raises:
    ValueError: naming the unknown pair and the valid ones.
  """
  for name in names:
    if name not in PAIRS:
      raise ValueError(f"unknown pair {name!r} in --pairs; choose from {', '.join(PAIRS)}")
  if not names:
    raise ValueError(f"--pairs is empty; choose from {', '.join(PAIRS)}")
  return list(dict.fromkeys(names))


def _importable(name: str) -> bool:
  """Whether ``import name`` finds a module; nothing is imported (a None entry in
  ``sys.modules`` blocks the import)."""
  if name in sys.modules:
    return sys.modules[name] is not None
  return importlib.util.find_spec(name) is not None


def require_torch(pairs=None) -> None:
  """Raises a one-line ValueError naming the install command when torch or a
  package the PyTorch side of ``pairs`` (default: every pair) imports is missing."""
  pairs = list(PAIRS) if pairs is None else list(pairs)
  needed = dict.fromkeys(["torch"] + [m for p in pairs for m in PAIRS[p].modules])
  missing = [name for name in needed if not _importable(name)]
  if missing:
    without = [p for p in pairs if not set(PAIRS[p].modules) & set(missing)]
    hint = (f" (or run --pairs={','.join(without)})"
            if "torch" not in missing and without else "")
    raise ValueError(f"the PyTorch side of {', '.join(pairs)} needs {', '.join(needed)}; "
                     f"{', '.join(missing)} cannot be imported: install them with "
                     f"pip install -e \".[bench]\"{hint}")


def genjax_config(pair: str, batch_size: int):
  """The genjax experiment config of ``pair`` at ``batch_size``, with its input
  shape (images) or its vocabulary (`GPT_VOCAB_SIZE`, token models) set."""
  spec = PAIRS[pair]
  config = importlib.import_module(f"experiments.configs.{spec.config}").get_config(
      spec.variant)
  config.batch_size = batch_size
  if is_token_model(config):
    config.model.vocab_size = GPT_VOCAB_SIZE
  else:
    config.model.input_shape = MNIST_SHAPE
  return config


def is_token_model(config) -> bool:
  """Whether the config's model reads token ids (its model block has a vocabulary)."""
  return "vocab_size" in config.model


def synthetic_images(config, batch_size: int) -> np.ndarray:
  """``uint8[B, 28, 28, 1]``: 0/1 for binarized data, 0..255 for 8-bit (seed 0)."""
  high = 2 if config.data.view == "binarized" else 256
  return np.random.default_rng(0).integers(0, high, (batch_size, *MNIST_SHAPE),
                                           dtype=np.uint8)


def synthetic_batch(config, batch_size: int) -> dict[str, np.ndarray]:
  """The batch both sides train on, keyed as genjax's data for the config (seed 0).

  Token models: ``{"tokens": int32[B, block_size + 1]}``, ids uniform in the
  vocabulary (a training window of genjax's text data: the model reads the first
  ``block_size`` tokens and predicts the last ``block_size``). Images:
  ``{"image": synthetic_images(...), "label": zeros int32[B]}``.
  """
  if is_token_model(config):
    shape = (batch_size, config.model.block_size + 1)
    return {"tokens": np.random.default_rng(0).integers(0, config.model.vocab_size, shape,
                                                        dtype=np.int32)}
  return {"image": synthetic_images(config, batch_size),
          "label": np.zeros(batch_size, np.int32)}


def _gpu() -> bool:
  return _DEVICE.value == "gpu"


# ----------------------------------------------------------------------- workers


def _check_jax_device() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if _gpu() and jax.default_backend() != "gpu":
    raise ValueError(f"--device=gpu: JAX has no GPU backend (its default is "
                     f"{jax.default_backend()}); install jax[cuda12]")


def _gemm_worker() -> dict:
  """The float32 matrix-product speed of JAX on this device: the percentage base."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  common.setup()
  _check_jax_device()
  n = 8192 if _gpu() else 2048
  a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in range(2))
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, b))
  times = []
  for _ in range(10):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - t0)
  return {"size": n, "gflops_per_second": 2 * n ** 3 / min(times) / 1e9,
          "device": jax.devices()[0].device_kind}


def _genjax_worker(pair: str, extras: bool) -> dict:
  """Compiles and times the genjax train step of ``pair``; times cached sampling."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from genjax import experiment, inspection  # pylint: disable=g-import-not-at-top
  from genjax import train as train_lib  # pylint: disable=g-import-not-at-top
  common.setup()
  _check_jax_device()
  config = genjax_config(pair, _BATCH.value)
  # the batch given: a token model's text is not read (genjax_config sets its vocabulary)
  setup = experiment.compile_setup(config, jax.devices()[:1],
                                   batch=synthetic_batch(config, _BATCH.value))
  batch, state, key = setup.batch, setup.state, setup.key
  if getattr(setup.family, "initialize", None) is not None:  # ActNorm, as a run does
    ts = nnx.merge(setup.graphdef, state)
    setup.family.initialize(ts.model, batch, jax.random.fold_in(key, 1))
    state = jax.device_put(nnx.state(ts), train_lib.state_shardings(state, setup.mesh))
  t0 = time.perf_counter()
  report = inspection.inspect_jitted(setup.step, state, batch, key)
  compile_seconds = time.perf_counter() - t0
  for i in range(_WARMUP.value):
    state, metrics = report.compiled(state, batch, key)
    if i == 0:
      init_loss = float(metrics["loss"] if "loss" in metrics else metrics["d_loss"])
  jax.block_until_ready(state)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = report.compiled(state, batch, key)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t0)
  out = {"params": setup.num_params, "flops": report.flops, "step_seconds": times,
         "compile_seconds": compile_seconds, "init_loss": init_loss,
         "device": setup.device_kind}
  if extras and PAIRS[pair].sampler and _SAMPLE_NUM.value:
    model, num = nnx.merge(setup.graphdef, state).model, _SAMPLE_NUM.value
    t0 = time.perf_counter()
    jax.block_until_ready(setup.family.sample(model, jax.random.key(1), num, method="cached"))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(setup.family.sample(model, jax.random.key(2), num, method="cached"))
    seconds = time.perf_counter() - t0
    out["sample"] = {"method": "cached", "images_per_second": num / seconds,
                     "seconds_per_call": seconds, "first_call_seconds": first}
  return out


def _torch_worker(pair: str, extras: bool, compile_model: bool) -> dict:
  """Times the PyTorch twin's train step (eager or compiled) and naive sampling."""
  require_torch([pair])
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_twins  # pylint: disable=g-import-not-at-top
  if _gpu() and not torch.cuda.is_available():
    raise ValueError(f"--device=gpu: torch {torch.__version__} sees no CUDA GPU")
  sync = torch.cuda.synchronize if _gpu() else (lambda: None)
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  config = genjax_config(pair, _BATCH.value)
  twin = torch_twins.build(pair, config, synthetic_batch(config, _BATCH.value),
                           "cuda" if _gpu() else "cpu", compile_model)
  t0 = time.perf_counter()
  init_loss = float(twin.step())  # torch.compile compiles here
  first_step_seconds = time.perf_counter() - t0
  flops, done = None, 1
  if extras and not compile_model:  # an untimed step, counted as a warm-up step
    with FlopCounterMode(display=False) as counter:
      twin.step()
    flops, done = counter.get_total_flops(), 2
  for _ in range(_WARMUP.value - done):
    twin.step()
  sync()
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    twin.step()
    sync()
    times.append(time.perf_counter() - t0)
  out = {"params": twin.num_params(), "flops": flops, "step_seconds": times,
         "first_step_seconds": first_step_seconds, "init_loss": init_loss,
         "threads": torch.get_num_threads(), "notes": list(twin.notes),
         "device": torch.cuda.get_device_name() if _gpu() else "cpu"}
  if extras and twin.net is not None and _SAMPLE_NUM.value and not compile_model:
    num, subpixels = _SAMPLE_NUM.value, math.prod(twin.shape)
    timed = min(_NAIVE_SUBPIXELS.value, subpixels)
    torch_twins.sample_naive(twin, num, 1)
    sync()
    t0 = time.perf_counter()
    torch_twins.sample_naive(twin, num, timed)
    sync()
    seconds = (time.perf_counter() - t0) * subpixels / timed
    out["sample"] = {"method": "naive", "images_per_second": num / seconds,
                     "seconds_per_call": seconds, "subpixels_timed": timed}
  return out


def _run_worker(side: str, pair: str | None = None, extras: bool = True) -> dict:
  """Runs one worker in a fresh process and returns the numbers it printed.

  Raises:
    WorkerError: with the worker's last line of stderr.
  """
  cmd = [sys.executable, "-m", "experiments.benchmarks.vs_pytorch", f"--worker={side}",
         f"--device={_DEVICE.value}", f"--batch_size={_BATCH.value}",
         f"--steps={_STEPS.value}", f"--warmup={_WARMUP.value}",
         f"--sample_num={_SAMPLE_NUM.value}", f"--naive_subpixels={_NAIVE_SUBPIXELS.value}",
         f"--{'' if extras else 'no'}worker_extras"]
  if pair is not None:
    cmd.append(f"--pairs={pair}")
  env = dict(os.environ)
  if not _gpu():
    env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=_ROOT,
                        check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(_RESULT):
      return json.loads(line[len(_RESULT):])
  lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
  reason = lines[-1] if lines else f"exit status {proc.returncode}"
  raise WorkerError(reason.removeprefix("error: "))


def _worker_main(pair: str) -> None:
  if _WORKER.value == "gemm":
    out = _gemm_worker()
  elif _WORKER.value == "genjax":
    out = _genjax_worker(pair, _EXTRAS.value)
  else:
    out = _torch_worker(pair, _EXTRAS.value, _WORKER.value == "torch_compile")
  print(_RESULT + json.dumps(out), flush=True)


# ----------------------------------------------------------------------- summary


def _median_ms(runs: list[dict]) -> float | None:
  times = [t for run in runs for t in run["step_seconds"]]
  return statistics.median(times) * 1e3 if times else None


def summarize(pair: str, runs: dict[str, list[dict]], gemm: dict) -> dict:
  """The numbers of one pair from its workers' outputs (round 0 holds the extras)."""
  g, t = runs["genjax"][0], runs["torch"][0]
  row = {"pair": pair, "config": f"{PAIRS[pair].config}.py:{PAIRS[pair].variant}",
         "peer": PAIRS[pair].peer,
         "params": {"genjax": g["params"], "torch": t["params"]},
         "flops": {"genjax": g["flops"], "torch": t["flops"]},
         "step_ms": {side: _median_ms(runs[side]) for side in runs if runs[side]},
         "init_loss": {"genjax": g["init_loss"], "torch": t["init_loss"]},
         "notes": t["notes"], "runs": runs}
  row["params_match"] = (abs(g["params"] - t["params"])
                         <= PARAMS_TOLERANCE * max(g["params"], t["params"]))
  row["ratio"] = row["step_ms"]["genjax"] / row["step_ms"]["torch"]
  if g["flops"]:
    row["gflops_per_second"] = g["flops"] / row["step_ms"]["genjax"] / 1e6
    row["percent_of_gemm_peak"] = 100 * row["gflops_per_second"] / gemm["gflops_per_second"]
  if t["flops"]:  # PyTorch's count of the same network over each side's step time
    row["gflops_per_second_by_torch_count"] = {
        side: t["flops"] / ms / 1e6 for side, ms in row["step_ms"].items()}
  if "sample" in g and "sample" in t:
    row["sampling"] = {"genjax_cached": g["sample"], "torch_naive": t["sample"],
                       "speedup": g["sample"]["images_per_second"]
                                  / t["sample"]["images_per_second"]}
  return row


def same_magnitude(a: float, b: float) -> bool:
  """Both finite and within a factor of 2 of each other (losses at initialisation)."""
  return math.isfinite(a) and math.isfinite(b) and (a == b or 0.5 <= a / b <= 2.0)


def initial_losses_agree(pair: str, config, genjax_loss: float, torch_loss: float) -> bool:
  """The check of both losses at initialisation: finite; of the same magnitude where
  both sides compute the same loss; for a token model both within
  `TOKEN_LOSS_TOLERANCE` of ``ln(vocabulary)``, the loss of a uniform prediction."""
  losses = (genjax_loss, torch_loss)
  if not all(map(math.isfinite, losses)):
    return False
  if PAIRS[pair].same_loss and not same_magnitude(*losses):
    return False
  if is_token_model(config):
    uniform = math.log(config.model.vocab_size)
    return all(abs(x - uniform) <= TOKEN_LOSS_TOLERANCE * uniform for x in losses)
  return True


def _fmt(x, spec: str) -> str:
  return "-" if x is None else format(x, spec)


def markdown_table(rows: list[dict], torch_compile: bool) -> str:
  """The results as a Markdown table."""
  head = ["model", "peer", "params genjax / torch", "GFLOP/step genjax / torch",
          "genjax ms", "torch ms", "genjax/torch"]
  if torch_compile:
    head.append("torch.compile ms")
  head += ["genjax GFLOP/s (% of GEMM)", "sampling img/s genjax cached / torch naive"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    gflop = {k: None if v is None else v / 1e9 for k, v in r["flops"].items()}
    cells = [r["pair"], r["peer"], f"{r['params']['genjax']:,} / {r['params']['torch']:,}",
             f"{_fmt(gflop['genjax'], '.2f')} / {_fmt(gflop['torch'], '.2f')}",
             _fmt(r["step_ms"]["genjax"], ".1f"), _fmt(r["step_ms"]["torch"], ".1f"),
             f"{r['ratio']:.2f}"]
    if torch_compile:
      cells.append(_fmt(r["step_ms"].get("torch_compile"), ".1f"))
    cells.append(f"{r['gflops_per_second']:.1f} ({r['percent_of_gemm_peak']:.0f}%)"
                 if "gflops_per_second" in r else "-")
    s = r.get("sampling")
    cells.append("-" if s is None else
                 f"{s['genjax_cached']['images_per_second']:.1f} / "
                 f"{s['torch_naive']['images_per_second']:.3g} ({s['speedup']:.0f}x)")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _notes(row: dict, errors: dict[str, str], gemm_gflops: float) -> list[str]:
  """Lines under the table: mismatches, what differs, losses at initialisation."""
  pair, out = row["pair"], []
  p = row["params"]
  if not row["params_match"]:
    out.append(f"warning: {pair}: the parameter counts differ by more than "
               f"{PARAMS_TOLERANCE:.0%} (genjax {p['genjax']:,}, torch {p['torch']:,})")
  g, t = row["init_loss"]["genjax"], row["init_loss"]["torch"]
  comparable = not PAIRS[pair].same_loss or same_magnitude(g, t)
  out.append(f"{pair}: loss at the first step genjax {g:.4g}, torch {t:.4g}"
             + ("" if comparable else "  (warning: not of the same magnitude)"))
  flops = row["flops"]
  if flops["genjax"] and flops["torch"] and flops["genjax"] < 0.5 * flops["torch"]:
    by_count = row["gflops_per_second_by_torch_count"]["genjax"]
    out.append(f"{pair}: XLA's FLOP count is {flops['genjax'] / flops['torch']:.0%} of "
               "PyTorch's count of the same network: XLA's cost analysis counts the body "
               "of a while loop (a lax.scan) once; with PyTorch's count genjax does "
               f"{by_count:.1f} GFLOP/s ({100 * by_count / gemm_gflops:.0f}% of GEMM)")
  out += [f"{pair}: {note}" for note in row["notes"]]
  if pair in errors:
    out.append(f"{pair}: torch.compile failed: {errors[pair]}")
  return out


def _versions() -> dict[str, str | None]:
  out = {}
  for name in ("jax", "jaxlib", "flax", "optax", "torch", "normflows", "transformers",
               "denoising-diffusion-pytorch"):
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = None
  return out


# ---------------------------------------------------------------------- --check


def run_check(pairs: list[str], batch_size: int) -> bool:
  """Both sides at initialisation on the same batch; True if every check passed."""
  import jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from genjax import models  # pylint: disable=g-import-not-at-top
  from genjax import train as train_lib  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_twins  # pylint: disable=g-import-not-at-top
  common.setup()
  torch.manual_seed(0)
  passed = True
  for pair in pairs:
    config = genjax_config(pair, batch_size)
    family, key = models.get(config.model.name), jax.random.key(0)
    model = family.build(config.model, key)
    batch = synthetic_batch(config, batch_size)
    if getattr(family, "initialize", None) is not None:
      family.initialize(model, batch, jax.random.fold_in(key, 1))
    twin = torch_twins.build(pair, config, batch)
    g, t = float(family.loss(model, batch, key)[0]), float(twin.loss())
    pg, pt = train_lib.count_params(model), twin.num_params()
    ok = (initial_losses_agree(pair, config, g, t)
          and abs(pg - pt) <= PARAMS_TOLERANCE * max(pg, pt))
    line = (f"{pair}: params genjax {pg:,}, torch {pt:,}; loss at initialisation "
            f"genjax {g:.4f}, torch {t:.4f}")
    if is_token_model(config):
      line += f" (ln {config.model.vocab_size} = {math.log(config.model.vocab_size):.4f})"
    if not PAIRS[pair].same_loss:
      line += " (different losses: finite is checked)"
    if PAIRS[pair].sampler:
      images = batch["image"]
      torch_twins.copy_genjax_weights(model, twin.net)
      copied = float(twin.loss())
      logits = np.asarray(family.conditionals(model, images))
      max_diff = float(np.abs(logits - torch_twins.pixel_logits(twin, images)).max())
      rel = abs(copied - g) / abs(g)
      ok = ok and rel <= 1e-4 and max_diff <= 1e-3
      line += (f"; with genjax's weights torch {copied:.4f} (relative difference "
               f"{rel:.1e}), max |logit difference| {max_diff:.1e}")
    print(f"{line}: {'ok' if ok else 'FAILED'}", flush=True)
    passed = passed and ok
  return passed


# -------------------------------------------------------------------------- main


def main(argv):
  del argv
  pairs = parse_pairs(_PAIRS.value)
  if _WORKER.value is not None:
    _worker_main(pairs[0])
    return
  require_torch(pairs)
  if _CHECK.value:
    if not run_check(pairs, _BATCH.value):
      common.fail("a twin does not match its genjax model (see the lines above)")
    return
  import torch  # pylint: disable=g-import-not-at-top
  if _gpu() and not torch.cuda.is_available():
    raise ValueError(f"--device=gpu: torch {torch.__version__} sees no CUDA GPU "
                     f"(torch.cuda.is_available() is False)")
  start, load_start = time.time(), os.getloadavg()
  try:
    gemm = _run_worker("gemm")
  except WorkerError as e:
    raise ValueError(f"the JAX matrix-product worker failed: {e}") from None
  sides = _SIDES + (("torch_compile",) if _TORCH_COMPILE.value else ())
  print(f"{measure.cpu_model()}, {os.cpu_count()} cores; device {_DEVICE.value} "
        f"({gemm['device']}); GEMM peak {gemm['gflops_per_second']:.1f} GFLOP/s "
        f"(JAX float32 {gemm['size']}x{gemm['size']} matmul, fastest of 10)", flush=True)
  print(f"batch {_BATCH.value}, float32, Adam or AdamW as the config says; "
        f"{_ROUNDS.value} rounds x {_STEPS.value} "
        f"timed steps after {_WARMUP.value} warm-up steps; PyTorch eager "
        f"(torch.set_num_threads(os.cpu_count()) = {os.cpu_count()}), channels-first",
        flush=True)
  rows, errors = [], {}
  for pair in pairs:
    runs = {side: [] for side in sides}
    for r in range(_ROUNDS.value):
      order = sides if r % 2 == 0 else sides[::-1]
      for side in order:
        if side == "torch_compile" and pair in errors:
          continue
        try:
          out = _run_worker(side, pair, extras=r == 0)
        except WorkerError as e:
          if side != "torch_compile":
            raise ValueError(f"the {side} worker of {pair} failed: {e}") from None
          errors[pair] = str(e)
          print(f"{pair}: torch.compile failed: {e}", flush=True)
          continue
        runs[side].append(out)
        print(f"{pair} round {r + 1}/{_ROUNDS.value}: {side} "
              f"{statistics.median(out['step_seconds']) * 1e3:.1f} ms/step", flush=True)
    rows.append(summarize(pair, runs, gemm))
  load_end, wall = os.getloadavg(), time.time() - start
  print()
  print(markdown_table(rows, _TORCH_COMPILE.value))
  print()
  print("FLOPs: genjax = XLA's cost analysis of the compiled step (every operation, the "
        "optimizer included); torch = FlopCounterMode over one step (matrix products "
        "and convolutions, forward and backward). Times: median step of all rounds.")
  for row in rows:
    for line in _notes(row, errors, gemm["gflops_per_second"]):
      print(line)
  print(f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end; "
        f"wall time {wall:.0f} s")
  if _OUT.value:
    report = {
        "settings": {"pairs": pairs, "batch_size": _BATCH.value, "rounds": _ROUNDS.value,
                     "steps": _STEPS.value, "warmup": _WARMUP.value,
                     "sample_num": _SAMPLE_NUM.value,
                     "naive_subpixels": _NAIVE_SUBPIXELS.value,
                     "torch_compile": _TORCH_COMPILE.value, "device": _DEVICE.value,
                     "torch_threads": os.cpu_count()},
        "hardware": {"cpu": measure.cpu_model(), "cores": os.cpu_count(),
                     "device": gemm["device"]},
        "versions": _versions(), "gemm": gemm,
        "load_average": {"start": list(load_start), "end": list(load_end)},
        "wall_seconds": wall, "torch_compile_errors": errors, "pairs": rows}
    pathlib.Path(_OUT.value).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
