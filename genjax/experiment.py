"""Runs over a work directory: train (and resume), evaluate, sample.

These are the libraries behind ``experiments.main``, ``experiments.evaluate`` and
``experiments.sample``; they are written once against the model protocol of
``genjax.models`` and work for every family. A work directory holds::

  config.json        the run's config (later launches with --workdir only reuse it)
  metrics.jsonl      one JSON object per logged step (train and eval rows)
  tb/                TensorBoard events
  samples/           PNG sample grids
  checkpoints/<step> orbax checkpoints of the train state and the data position
  eval.json          written by evaluate
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import pathlib
import signal
import sys
import time
import types
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from genjax import checkpoint as ckpt_lib
from genjax import images as images_lib
from genjax import models
from genjax import train as train_lib
from genjax.data import run_data
from genjax.rundir import MetricWriter
from genjax.rundir import check_resumable as _check_resumable
from genjax.rundir import check_writable
from genjax.rundir import fmt_time as _fmt_time
from genjax.rundir import load_config
from genjax.rundir import logged_eval
from genjax.rundir import prepare_config
from genjax.rundir import read_metrics
from genjax.rundir import save_config

_FETCH_EVERY = 20  # steps whose metrics are fetched from the device together


class NonFiniteLossError(RuntimeError):
  """Training stopped because a step produced a non-finite loss or metric."""


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------ model functions


def jit_model_fn(fn: Callable, static_argnames: Iterable[str] = ()) -> Callable:
  """``jax.jit`` of ``fn(model, *args)`` taking ``(graphdef, state, *args)``.

  The model is passed as its split state so that the compiled function is pure;
  the graphdef is static (hashable), so one compilation serves every call with
  the same shapes.
  """
  def wrapped(graphdef, state, *args, **kwargs):
    return fn(nnx.merge(graphdef, state), *args, **kwargs)
  return jax.jit(wrapped, static_argnums=0, static_argnames=tuple(static_argnames))


@functools.lru_cache(maxsize=32)
def _eval_fns(family: types.ModuleType, ll_items: tuple) -> tuple[Callable, Callable | None]:
  """Jitted log-likelihood and eval-metrics functions, made once per family."""
  ll_kwargs = dict(ll_items)
  ll_fn = (jit_model_fn(lambda m, b, k: family.log_likelihood(m, b, k, **ll_kwargs))
           if has_likelihood(family) else None)
  extra = getattr(family, "eval_metrics", None)
  return ll_fn, (jit_model_fn(extra) if extra is not None else None)


def has_likelihood(family: types.ModuleType) -> bool:
  """Whether the family defines ``log_likelihood`` (a GAN's ``LIKELIHOOD`` is None)."""
  return getattr(family, "LIKELIHOOD", "exact") is not None


def evaluate_model(family: types.ModuleType, model: nnx.Module,
                   batches: Iterable[dict], key: jax.Array, *,
                   ll_kwargs: dict | None = None, progress: bool = False,
                   num_batches: int | None = None) -> dict[str, Any]:
  """Mean log-likelihood and the family's ``eval_metrics`` over ``batches``.

  Returns:
    For images: ``nll_nats`` (per example) and ``bits_per_dim`` (``nll / (D ln
    2)``) for families with a likelihood, the mean of every ``eval_metrics``
    entry, and ``num_examples``. For tokens (``eval_metrics`` gives
    ``num_tokens``): ``nats_per_token``, ``bits_per_token``, ``perplexity``,
    ``num_tokens`` and, where ``batches`` knows its ``num_chars``,
    ``bits_per_char`` (total nats / characters / ln 2, comparable across
    tokenizers).
  """
  graphdef, state = nnx.split(model)
  ll_fn, extra_fn = _eval_fns(family, tuple(sorted((ll_kwargs or {}).items())))
  sums: dict[str, float] = {}
  vectors: dict[str, np.ndarray] = {}
  count = 0
  start = time.time()
  for i, batch in enumerate(batches):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    bkey = jax.random.fold_in(key, i)
    if ll_fn is not None:
      ll = np.asarray(ll_fn(graphdef, state, batch, bkey), np.float64)
      sums["ll"] = sums.get("ll", 0.0) + float(ll.sum())
    if extra_fn is not None:
      for k, v in extra_fn(graphdef, state, batch, jax.random.fold_in(bkey, 1)).items():
        v = np.asarray(v, np.float64)
        if v.ndim > 1:  # per-example vectors (e.g. code counts): summed over examples
          vectors[k] = vectors.get(k, 0.0) + v.sum(0)
        else:
          sums[k] = sums.get(k, 0.0) + float(v.sum())
    count += next(iter(batch.values())).shape[0]
    if progress:
      done = i + 1
      rate = count / max(time.time() - start, 1e-9)
      eta = ((num_batches - done) * (time.time() - start) / done
             if num_batches else float("nan"))
      nll = ""
      if "ll" in sums:
        nll = (f"{-sums['ll'] / max(sums['num_tokens'], 1):.4f} nats/token | "
               if "num_tokens" in sums else f"nll {-sums['ll'] / count:.3f} nats | ")
      _log(f"  eval batch {done}/{num_batches or '?'} | {count} examples | "
           f"{nll}{rate:.1f} ex/s | ETA {_fmt_time(eta)}")
  if count == 0:
    raise ValueError("evaluation saw no examples")
  summary = getattr(family, "eval_summary", None)
  if vectors and summary is not None:  # e.g. a tokenizer's codebook usage
    sums.update({k: v * count for k, v in summary(vectors).items()})
  if "num_tokens" in sums and "ll" in sums:
    out = _token_summary(-sums.pop("ll"), sums.pop("num_tokens"),
                         getattr(batches, "num_chars", None))
    return {**out, **{k: v / count for k, v in sums.items()}}
  out = {}
  if "ll" in sums:
    out["nll_nats"] = -sums.pop("ll") / count
    out["bits_per_dim"] = out["nll_nats"] / (math.prod(model.input_shape) * math.log(2))
  out.update({k: v / count for k, v in sums.items()})
  out["num_examples"] = count
  return out


def _token_summary(nats: float, num_tokens: float, num_chars: int | None) -> dict[str, Any]:
  per_token = nats / max(num_tokens, 1.0)
  out = {"nats_per_token": per_token, "bits_per_token": per_token / math.log(2),
         "perplexity": math.exp(min(per_token, 700.0)), "num_tokens": int(num_tokens)}
  if num_chars:
    out.update(bits_per_char=nats / num_chars / math.log(2), num_chars=int(num_chars))
  return out


# ---------------------------------------------------------------------- train


def _creator(family, config, key) -> Callable[[], train_lib.TrainState]:
  """The function that builds a fresh train state (also run under eval_shape)."""
  return lambda: train_lib.create_train_state(
      family, config.model, config.optimizer, config.total_steps, key)


def _data_kwargs(config) -> dict:
  return dict(data_dir=config.data.get("data_dir") or None,
              mnist_dir=config.data.get("mnist_dir") or None)


# The seed of every evaluation set's fixed randomness (the static binarization of a
# test split, the strips of a caption test set): not the run's seed, so runs with
# different seeds are scored on the same test set.
EVAL_SEED = 0


def _binary(config) -> bool:
  """Whether the run's images hold 0/1 (shown as black and white), from its data
  view, not guessed from the values (an 8-bit grid whose maximum is 1 is dark)."""
  return config.data.get("view") == "binarized"


def _eval_batches(data, config, split="test", batch_size=None):
  # not config.seed: the evaluation set does not depend on the run's seed
  return data.eval_batches(split, batch_size or config.eval_batch_size, EVAL_SEED)


@contextlib.contextmanager
def _stop_signals():
  """SIGINT/SIGTERM set a flag instead of killing the process mid-step."""
  flag = {"signal": None}

  def handler(signum, _):
    flag["signal"] = signal.Signals(signum).name

  previous = {}
  for s in (signal.SIGINT, signal.SIGTERM):
    try:
      previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: leave signals alone
      pass
  try:
    yield flag
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
          devices=None) -> dict[str, Any]:
  """Trains (or resumes) the run of ``config`` in ``workdir``.

  Resumes from the newest checkpoint in ``workdir/checkpoints`` with the step
  count, the randomness and the data order continuing; raising
  ``config.total_steps`` continues a finished run, and launching a finished run
  again only reports its final evaluation. ``config.json`` is written once the
  first step has run, so a start that fails leaves no config behind; a directory
  without a checkpoint starts a new run whatever its ``config.json`` says.

  Args:
    config: an experiment config (``experiments/configs/<name>.py``).
    workdir: the run's directory (created if needed).
    devices: devices of the data-parallel mesh (default: all).

  Returns:
    The last logged train metrics and the final evaluation.

  Raises:
    NonFiniteLossError: a step produced a non-finite loss; nothing was saved from
      it, and the message names the newest good checkpoint.
  """
  workdir = pathlib.Path(workdir)
  check_writable(workdir, "the work directory")
  workdir.mkdir(parents=True, exist_ok=True)
  family = models.get(config.model.name)
  prepare_run = getattr(family, "prepare_run", None)
  if prepare_run is not None:  # e.g. DALL-E trains its image tokenizer first
    config = prepare_run(config, workdir)
  config = prepare_config(config)

  mesh = train_lib.make_mesh(devices)
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", config.keep_checkpoints)
  try:
    if ckpt.latest_step() is not None:  # a resume: the run's own files rule
      config = prepare_config(config, workdir)  # e.g. its tokenizer's vocabulary
      if (workdir / "config.json").exists():
        _check_resumable(load_config(workdir), config)
    return _train(config, workdir, family, mesh, ckpt)
  finally:
    ckpt.close()  # on every exit, errors included: else orbax's threads print at exit


def _train(config, workdir: pathlib.Path, family, mesh, ckpt) -> dict[str, Any]:
  """`train` with its config validated and its checkpointer open."""
  root = jax.random.key(config.seed)
  init_key, train_key, sample_key, eval_key = jax.random.split(root, 4)
  data_seed = config.seed

  create = _creator(family, config, init_key)
  data = run_data.for_config(config, workdir if ckpt.latest_step() is not None else None)
  it = data.train_iterator(config.batch_size // jax.process_count(), data_seed)

  latest = ckpt.latest_step()
  if latest is None:
    ts = create()
    init = getattr(family, "initialize", None)
    if init is not None:  # data-dependent init, only on a fresh start
      init_batch = next(data.train_iterator(config.batch_size // jax.process_count(),
                                            data_seed))
      init(ts.model, {k: jnp.asarray(v) for k, v in init_batch.items()},
           jax.random.fold_in(init_key, 1))
    graphdef, state = nnx.split(ts)
    state = train_lib.replicate(state, mesh)
    start = 0
    _log(f"genjax: new run of {config.model.name} on {config.data.name} in {workdir}")
  else:
    abstract = nnx.eval_shape(create)
    graphdef, abstract_state = nnx.split(abstract)
    abstract_state = ckpt_lib.abstract_like(
        abstract_state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    state, data_state, start = ckpt.restore(abstract_state)
    if data_state:
      it.set_state(data_state)
    _log(f"genjax: resuming {workdir} from checkpoint step {start}")
  if start >= config.total_steps:
    finished = _finished_run(workdir, start)
    if finished is not None:
      _log(f"genjax: the run in {workdir} is finished (step {start}, total_steps "
           f"{config.total_steps}); nothing to do. Raise --config.total_steps to train "
           "it longer")
      return finished

  ts_view = nnx.merge(graphdef, state)
  num_params = train_lib.count_params(ts_view.model)
  model_graphdef = nnx.graphdef(ts_view.model)
  del ts_view
  _log(f"genjax: {num_params:,} parameters, {mesh.devices.size} device(s) "
       f"({jax.devices()[0].platform}), global batch {config.batch_size}, "
       f"steps {start} -> {config.total_steps}")

  step_fn = train_lib.compile_train_step(family, graphdef, mesh)
  writer = MetricWriter(workdir, resume_step=start)  # drops rows a kill left past start
  last: dict[str, Any] = {}

  def model_state(state):
    return nnx.state(nnx.merge(graphdef, state).model)

  def write_samples(step, state):
    key = jax.random.fold_in(sample_key, step)
    if data.kind == "text":
      model = nnx.merge(model_graphdef, model_state(state))
      texts = sample_texts(family, model, data.tokenizer, key, num=config.num_samples,
                           max_new_tokens=config.get("sample_tokens", 256))
      path = _write_texts(workdir / "samples" / f"step_{step:08d}.txt", texts)
      writer.write_text(step, "samples", texts)
      return path
    # family.sample compiles once per model structure and shapes, for every run of
    # this process (a fresh jit per run would trace the sampler again)
    images = family.sample(nnx.merge(model_graphdef, model_state(state)), key,
                           num=config.num_samples)
    path = images_lib.save_grid(workdir / "samples" / f"step_{step:08d}.png",
                                np.asarray(images), binary=_binary(config))
    writer.write_images(step, "samples", images_lib.grid(np.asarray(images),
                                                         binary=_binary(config)))
    return path

  def run_eval(step, state):
    model = nnx.merge(graphdef, state).model
    t0 = time.time()
    result = evaluate_model(family, model, _eval_batches(data, config), eval_key)
    row = {f"eval/{k}": v for k, v in result.items()}
    row["eval/seconds"] = time.time() - t0
    writer.write(step, row)
    _log(f"  eval at step {step}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result.items() if k != "num_examples"))
    return result

  def save(step, state):
    ckpt.save(step, state, it.get_state())

  # Device metrics are fetched in groups (a fetch per step would serialise the
  # host and the device); every action below first checks each pending step.
  pending: list[tuple[int, train_lib.Metrics]] = []
  window: dict[str, float] = {}
  window_n = 0
  t_window = t_start = time.time()
  step = window_step = start
  stopped_by = None
  last_eval, last_eval_step = None, None

  def account():
    nonlocal window_n
    for s, host in zip([p[0] for p in pending], jax.device_get([p[1] for p in pending])):
      _check_finite((s, host), ckpt, workdir)
      for k, v in host.items():
        window[k] = window.get(k, 0.0) + float(v)
      window_n += 1
    pending.clear()

  try:
    with _stop_signals() as stop:
      while step < config.total_steps:
        batch = train_lib.shard_batch(next(it), mesh)
        state, metrics = step_fn(state, batch, train_key)
        step += 1
        if step == start + 1:  # keep compilation out of the step rate
          jax.block_until_ready(metrics)
          t_window, window_step = time.time(), step
          # the run has started (state, data, mesh and the compiled step all
          # work): only now do the config and tokenizer claim the work directory
          save_config(config, workdir)
          data.save(workdir)
        pending.append((step, metrics))
        if len(pending) >= _FETCH_EVERY:
          account()
        is_log = step % config.log_every == 0 or step == config.total_steps
        is_eval = bool(config.eval_every) and step % config.eval_every == 0
        is_sample = bool(config.sample_every) and step % config.sample_every == 0
        is_ckpt = step % config.checkpoint_every == 0
        if not (is_log or is_eval or is_sample or is_ckpt or stop["signal"]):
          continue
        account()  # every action below sees checked, finite steps
        if is_log:
          now = time.time()
          rate = max(step - window_step, 1) / max(now - t_window, 1e-9)
          row = {k: v / window_n for k, v in window.items() if k != "finite"}
          row.update(steps_per_sec=rate, examples_per_sec=rate * config.batch_size,
                     wall_seconds=now - t_start)
          throughput = f"{rate * config.batch_size:.0f} ex/s"
          if data.kind == "text":
            row["tokens_per_sec"] = rate * config.batch_size * data.block_size
            throughput = f"{row['tokens_per_sec']:.0f} tok/s | {1e3 / rate:.1f} ms/step"
          writer.write(step, row)
          losses = "".join(f"{k} {v:.4f} | " for k, v in row.items()
                           if k == "loss" or k.endswith("_loss"))
          _log(f"step {step}/{config.total_steps} | {losses}"
               f"{rate:.1f} steps/s | {throughput} | "
               f"elapsed {_fmt_time(now - t_start)} | "
               f"ETA {_fmt_time((config.total_steps - step) / rate)}")
          last = row
          window, window_n, t_window, window_step = {}, 0, time.time(), step
        t_work = time.time()
        if is_eval:
          last_eval, last_eval_step = run_eval(step, state), step
        if is_sample:
          write_samples(step, state)
        if is_ckpt:
          save(step, state)
        t_window += time.time() - t_work  # the step rate counts train steps only
        if stop["signal"]:
          stopped_by = stop["signal"]
          break
      account()
    if ckpt.latest_step() != step:
      save(step, state)
    if stopped_by:
      ckpt.wait()
      _log(f"genjax: {stopped_by} received; saved checkpoint at step {step} in "
           f"{ckpt.path(step)}; re-run the same command to resume")
      return {"train": last, "stopped_by": stopped_by, "step": step}
    path = write_samples(step, state)
    if last_eval_step == step:
      result = last_eval
    else:  # a finished run launched again may have its final evaluation already
      result = logged_eval(workdir, step) or run_eval(step, state)
    _log(f"genjax: done at step {step} in {_fmt_time(time.time() - t_start)}; "
         f"samples in {path}")
    return {"train": last, "eval": result, "step": step}
  finally:
    writer.close()


def _finished_run(workdir: pathlib.Path, step: int) -> dict[str, Any] | None:
  """What `train` returns for a run finished at ``step``, if it has its final
  evaluation and sample grid (a kill between the last checkpoint and them
  leaves them to do)."""
  result = logged_eval(workdir, step)
  if result is None or not (workdir / "samples" / f"step_{step:08d}.png").exists():
    return None
  train_rows = read_metrics(workdir, "train")
  return {"train": train_rows[-1] if train_rows else {}, "eval": result, "step": step,
          "finished": True}


def _check_finite(prev, ckpt, workdir: pathlib.Path) -> None:
  step, metrics = prev
  if float(metrics.get("finite", 1.0)) < 1.0:
    bad = ", ".join(f"{k}={float(v):g}" for k, v in metrics.items()
                    if not math.isfinite(float(v)))
    good = ckpt.latest_step()
    where = (f"the newest good checkpoint is step {good} in {ckpt.path(good)}"
             if good is not None else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"non-finite loss or metric at step {step} ({bad}); training stopped and the "
        f"update was not applied; {where}. {_nan_fix(workdir)}")


def _nan_fix(workdir: pathlib.Path) -> str:
  """How to relaunch after a non-finite loss, with the values that will be reused."""
  if not (workdir / "config.json").exists():
    return ("Lower config.optimizer.learning_rate or set "
            "config.optimizer.grad_clip_norm, then launch again.")
  opt = load_config(workdir).optimizer
  return (f"A relaunch with --workdir={workdir} alone reuses its config.json "
          f"(optimizer.learning_rate={opt.learning_rate:g}, "
          f"optimizer.grad_clip_norm={opt.grad_clip_norm:g}); override them to resume "
          f"from the checkpoint, e.g. python -m experiments.main --workdir={workdir} "
          f"--config.optimizer.learning_rate={min(opt.learning_rate / 10, 1e-3):g} "
          "[--config.optimizer.grad_clip_norm=1]")


def synthetic_batch(config, batch_size: int | None = None, seed: int = 0) -> dict:
  """A random batch shaped and typed like the config's data (no example read)."""
  return run_data.for_config(config).synthetic_batch(batch_size or config.batch_size, seed)


def compile_setup(config, devices=None) -> types.SimpleNamespace:
  """A fresh train state, a synthetic batch and the jitted train step of ``config``.

  For inspection and benchmarks: nothing is read from disk. The train step is
  not yet compiled (``inspection.inspect_jitted`` compiles it).
  """
  config = prepare_config(config)
  family = models.get(config.model.name)
  mesh = train_lib.make_mesh(devices)
  ts = _creator(family, config, jax.random.key(config.seed))()
  num_params = train_lib.count_params(ts.model)
  graphdef, state = nnx.split(ts)
  return types.SimpleNamespace(
      step=train_lib.compile_train_step(family, graphdef, mesh),
      state=train_lib.replicate(state, mesh),
      batch=train_lib.shard_batch(synthetic_batch(config), mesh),
      key=jax.random.key(config.seed), num_params=num_params,
      num_devices=mesh.devices.size, device_kind=mesh.devices.flat[0].device_kind,
      config=config, family=family, graphdef=graphdef, mesh=mesh)


# ------------------------------------------------------- restore / evaluate / sample


def restore_model(workdir: str | pathlib.Path, step: int | None = None):
  """The model of the newest (or given) checkpoint in ``workdir``.

  Returns:
    ``(family, model, config, step)``.
  """
  workdir = pathlib.Path(workdir)
  config = load_config(workdir)
  family = models.get(config.model.name)
  key = jax.random.split(jax.random.key(config.seed), 4)[0]
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", config.keep_checkpoints)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(
          f"no checkpoint in {workdir / 'checkpoints'}; train first with "
          f"python -m experiments.main --workdir={workdir} --config=...")
    abstract = nnx.eval_shape(_creator(family, config, key))
    graphdef, abstract_state = nnx.split(abstract)
    abstract_state = ckpt_lib.abstract_like(
        abstract_state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    state, _, step = ckpt.restore(abstract_state, step)
  finally:
    ckpt.close()
  return family, nnx.merge(graphdef, state).model, config, step


def evaluate(workdir: str | pathlib.Path, *, num_samples: int = 5000,
             split: str = "test", batch_size: int | None = None,
             seed: int = 0, sample_metrics: bool | None = None,
             num_metric_samples: int = 10_000, feature_network=None) -> dict[str, Any]:
  """Evaluates the newest checkpoint on ``split``; writes ``workdir/eval.json``.

  Args:
    workdir: a run directory.
    num_samples: importance samples for families whose ``log_likelihood`` takes
      ``num_samples`` (the VAE's IWAE bound).
    split: the data split.
    batch_size: examples per evaluation batch (default ``config.eval_batch_size``).
    seed: seed of the evaluation's randomness.
    sample_metrics: compute FID, KID, precision and recall of model samples
      against ``split`` (`genjax.metrics`); None (default) does so where a feature
      network exists for the data's shape (28x28x1, MNIST) and records why not
      otherwise.
    num_metric_samples: samples drawn for them (at most the split's size).
    feature_network: the network of the sample metrics (default genjax's
      trained MNIST classifier, trained and cached on first use).

  Returns:
    The dict written to ``eval.json``: for text runs the held-out nats per token,
    bits per token and per character, and perplexity (`evaluate_model`).
  """
  from genjax import metrics  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  family, model, config, step = restore_model(workdir)
  check_writable(workdir / "eval.json", "the evaluation output", directory=False)
  data = run_data.for_config(config, workdir)
  ll_kwargs = {}
  params = inspect.signature(family.log_likelihood).parameters
  if "num_samples" in params and has_likelihood(family):
    ll_kwargs["num_samples"] = int(num_samples)
  batch_size = batch_size or config.eval_batch_size
  n = data.num_examples(split)
  num_batches = -(-n // batch_size)
  kind = ("no likelihood" if not has_likelihood(family) else
          f"likelihood: {getattr(family, 'LIKELIHOOD', 'exact')}"
          + (f", {ll_kwargs}" if ll_kwargs else ""))
  unit = {"text": "windows", "captions": "strips"}.get(data.kind, "examples")
  _log(f"genjax: evaluating {config.model.name} step {step} on {config.data.name}/"
       f"{split} ({n} {unit}, {kind})")
  t0 = time.time()
  batches = _eval_batches(data, config, split, batch_size)
  if data.kind == "image":
    batches = list(batches)  # read once, used twice
  result = evaluate_model(family, model, batches,
                          jax.random.key(seed), ll_kwargs=ll_kwargs, progress=True,
                          num_batches=num_batches)
  out = {"model": config.model.name, "dataset": config.data.name, "split": split,
         "step": step, **result, **ll_kwargs,
         "likelihood": getattr(family, "LIKELIHOOD", "exact"),
         "seconds": time.time() - t0, "device": jax.devices()[0].device_kind}
  if data.kind == "captions":
    out.update(sample_metrics="not computed here: see experiments.benchmarks."
               "caption_accuracy")
    (workdir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
  if data.kind == "text":
    out.update(tokenizer=data.tokenizer.kind, vocab_size=data.tokenizer.vocab_size,
               sample_metrics="not computed: text data")
    (workdir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
  out["view"] = config.data.view
  shape = tuple(config.model.input_shape)
  if sample_metrics is None:
    sample_metrics = feature_network is not None or metrics.has_feature_network(shape)
  if sample_metrics:
    _log(f"genjax: FID, KID, precision and recall of {num_metric_samples} samples")
    real = np.concatenate([b["image"] for b in batches])
    out.update(metrics.models.evaluate_samples(
        family, model, real, num=num_metric_samples,
        key=jax.random.fold_in(jax.random.key(seed), 1),
        binary=config.data.view == "binarized", batch_size=batch_size,
        network=feature_network, **_data_kwargs(config)))
    out["feature_network"] = ("given" if feature_network is not None else
                              metrics.classifier.RECIPE.name)
  else:
    out["sample_metrics"] = (
        f"not computed: genjax has a feature network for {metrics.classifier.MNIST_SHAPE} "
        f"images only, these are {shape}" if not metrics.has_feature_network(shape)
        else "not computed (sample_metrics=False)")
  if config.data.view == "binarized":
    out["binarization"] = (f"dynamic (fresh Bernoulli draw per example per epoch) in "
                           f"training; fixed-seed draw (seed {config.seed}) of the "
                           f"{split} split for evaluation")
  (workdir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
  return out


def sample(workdir: str | pathlib.Path, *, num: int = 64, out: str | None = None,
           seed: int = 0, extras: bool = True, **sample_kwargs) -> list[pathlib.Path]:
  """Writes a grid of ``num`` samples of the newest checkpoint as a PNG.

  With ``extras``, also writes the family's ``visualizations`` (e.g. the VAE's
  reconstructions, interpolations and latent map) beside it. ``sample_kwargs``
  (e.g. ``method``, ``temperature``) go to the family's ``sample``.

  Raises:
    ValueError: ``num`` is not a positive integer.
    PermissionError, NotADirectoryError, IsADirectoryError: ``out`` cannot be
      written (checked before sampling).
  """
  check_num(num)
  workdir = pathlib.Path(workdir)
  family, model, config, step = restore_model(workdir)
  _check_sample_kwargs(family, sample_kwargs)
  out_path = pathlib.Path(out) if out else workdir / "samples" / f"sample_{step:08d}.png"
  check_writable(out_path, "--out" if out else "the sample grid", directory=False)
  key = jax.random.key(seed)
  images = family.sample(model, key, num=num, **sample_kwargs)  # compiled once per statics
  paths = [images_lib.save_grid(out_path, np.asarray(images), binary=_binary(config))]
  vis = getattr(family, "visualizations", None)
  if extras and vis is not None:
    data = run_data.for_config(config, workdir)
    batch = next(iter(_eval_batches(data, config, "test", 16)))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    for name, imgs in vis(model, jax.random.fold_in(key, 1), batch).items():
      imgs = np.asarray(imgs)
      cols = int(round(math.sqrt(imgs.shape[0])))
      paths.append(images_lib.save_grid(
          out_path.with_name(f"{out_path.stem}_{name}.png"), imgs, cols=cols,
          binary=_binary(config)))
  return paths


def check_num(num) -> None:
  """Raises ValueError unless ``num`` (samples to draw) is a positive integer."""
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"the number of samples (--num, num=) must be a positive "
                     f"integer, got {num!r}")


def _check_sample_kwargs(family, kwargs) -> None:
  params = inspect.signature(family.sample).parameters
  unknown = [k for k in kwargs if k not in params]
  if unknown:
    raise ValueError(f"{family.__name__.rsplit('.', 1)[-1]} sampling takes no "
                     f"{', '.join('--' + k for k in unknown)}; its options: "
                     f"{', '.join(p for p in list(params)[3:])}")


def sample_texts(family, model, tokenizer, key: jax.Array, *, num: int, prompt: str = "\n",
                 max_new_tokens: int = 256, **sample_kwargs) -> list[str]:
  """``num`` continuations of ``prompt``, decoded, the prompt included.

  A prompt longer than the model's context is cut to its last ``block_size``
  tokens for the model; the text returned keeps all of it.
  """
  ids = tokenizer.encode(prompt or "\n")
  if len(ids) == 0:
    raise ValueError(f"the prompt {prompt!r} encodes to no token")
  head = ""
  if len(ids) > model.block_size:
    head, ids = tokenizer.decode(ids[:-model.block_size]), ids[-model.block_size:]
  tokens = family.sample(model, key, num, prompt=jnp.asarray(ids),
                         max_new_tokens=int(max_new_tokens), **sample_kwargs)
  return [head + tokenizer.decode(row) for row in np.asarray(tokens)]


def _write_texts(path: pathlib.Path, texts: list[str]) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(f"=== sample {i} ===\n{t}\n" for i, t in enumerate(texts)),
                  encoding="utf-8")
  return path


def sample_text(workdir: str | pathlib.Path, *, num: int = 4, out: str | None = None,
                seed: int = 0, prompt: str = "\n", max_new_tokens: int = 256,
                **sample_kwargs) -> tuple[list[str], pathlib.Path]:
  """Continues ``prompt`` ``num`` times with the newest checkpoint of a text run.

  Decodes with the run's own tokenizer and writes the samples to ``out`` (default
  ``WORKDIR/samples/sample_<step>.txt``).

  Args:
    workdir: a text run's directory.
    num, seed: how many samples, and the sampling seed.
    prompt: the text to continue.
    max_new_tokens: tokens drawn after the prompt.
    **sample_kwargs: ``temperature``, ``top_k``, ``top_p``, ``method``.

  Returns:
    ``(texts, path)``: the decoded samples, prompt included, and the file.
  """
  check_num(num)
  workdir = pathlib.Path(workdir)
  family, model, config, step = restore_model(workdir)
  _check_sample_kwargs(family, sample_kwargs)
  path = pathlib.Path(out) if out else workdir / "samples" / f"sample_{step:08d}.txt"
  check_writable(path, "--out" if out else "the samples file", directory=False)
  tokenizer = run_data.load_tokenizer(workdir)
  texts = sample_texts(family, model, tokenizer, jax.random.key(seed), num=num,
                       prompt=prompt, max_new_tokens=max_new_tokens, **sample_kwargs)
  return texts, _write_texts(path, texts)


def sample_captions(workdir: str | pathlib.Path, caption: str, *, num: int = 16,
                    candidates: int = 1, out: str | None = None, seed: int = 0,
                    **sample_kwargs) -> pathlib.Path:
  """A grid of ``num`` strips that a text-to-image run (DALL-E) draws for ``caption``,
  each the best of ``candidates`` by the run's CLIP-style scorer; written as a PNG
  (default ``WORKDIR/samples/caption_<step>.png``)."""
  check_num(num)
  workdir = pathlib.Path(workdir)
  family, model, config, step = restore_model(workdir)
  if not hasattr(family, "generate"):
    raise ValueError(f"{workdir} is a {config.model.name} run: --caption needs a "
                     "text-to-image run (dalle)")
  _check_sample_kwargs(family, sample_kwargs)
  path = pathlib.Path(out) if out else workdir / "samples" / f"caption_{step:08d}.png"
  check_writable(path, "--out" if out else "the sample grid", directory=False)
  images, _ = family.generate(model, jax.random.key(seed), [caption] * num,
                              candidates=candidates, **sample_kwargs)
  return images_lib.save_grid(path, np.asarray(images), binary=False,
                              cols=max(1, int(round(math.sqrt(num)))))
