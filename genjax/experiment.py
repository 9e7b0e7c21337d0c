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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from genjax import checkpoint as ckpt_lib
from genjax import images as images_lib
from genjax import models
from genjax import train as train_lib
from genjax.data import run_data
from genjax.rundir import MetricWriter
from genjax.rundir import check_num
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
  """Progress on stderr, from process 0 only (every host runs the same program)."""
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def _is_main() -> bool:
  """Whether this process writes the work directory's files (process 0 of a run)."""
  return jax.process_index() == 0


def _to_host(x) -> np.ndarray:
  """A global array's value on every host (gathered where it is split over hosts)."""
  if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ------------------------------------------------------------ model functions


def jit_model_fn(fn: Callable, static_argnames: Iterable[str] = (),
                 mesh: Mesh | None = None) -> Callable:
  """``jax.jit`` of ``fn(model, *args)`` taking ``(graphdef, state, *args)``.

  The model is passed as its split state so that the compiled function is pure;
  the graphdef is static (hashable), so one compilation serves every call with
  the same shapes. With a ``mesh``, the outputs are replicated on it, so that
  every host can read them.
  """
  def wrapped(graphdef, state, *args, **kwargs):
    return fn(nnx.merge(graphdef, state), *args, **kwargs)
  out = {} if mesh is None else {"out_shardings": NamedSharding(mesh, P())}
  return jax.jit(wrapped, static_argnums=0, static_argnames=tuple(static_argnames), **out)


@functools.lru_cache(maxsize=32)
def _eval_fn(family: types.ModuleType, ll_items: tuple, mesh: Mesh) -> Callable:
  """One compiled function per family and mesh: per-example log-likelihoods and
  ``eval_metrics`` of a batch split over the mesh, replicated on every device."""
  ll_kwargs = dict(ll_items)
  extra = getattr(family, "eval_metrics", None)

  def per_example(model, batch, weight, key):
    out = {"weight": weight}
    if has_likelihood(family):
      out["ll"] = family.log_likelihood(model, batch, key, **ll_kwargs)
    if extra is not None:
      out.update(extra(model, batch, jax.random.fold_in(key, 1)))
    return out

  return jit_model_fn(per_example, mesh=mesh)


def has_likelihood(family: types.ModuleType) -> bool:
  """Whether the family defines ``log_likelihood`` (a GAN's ``LIKELIHOOD`` is None)."""
  return getattr(family, "LIKELIHOOD", "exact") is not None


def _on_mesh(state, mesh: Mesh | None = None) -> tuple[Mesh, Any]:
  """The mesh a model state is placed on, and the state: a state that is not on
  a mesh yet is replicated on ``mesh`` (default: every device)."""
  for x in jax.tree.leaves(state):
    if isinstance(getattr(x, "sharding", None), NamedSharding):
      return x.sharding.mesh, state
  mesh = mesh or train_lib.make_mesh()
  return mesh, train_lib.replicate(state, mesh)


def _example_weights(batch: dict) -> tuple[dict, np.ndarray]:
  """``(batch, weight)``: an image batch's ``mask`` (False on padding rows) as
  per-example weights; token batches keep their token ``mask`` (padding windows
  count no token) and weigh every row 1."""
  batch = {k: np.asarray(v) for k, v in batch.items()}
  rows = next(iter(batch.values())).shape[0]
  if "image" in batch and "mask" in batch:
    return batch, batch.pop("mask").astype(np.float32)
  return batch, np.ones((rows,), np.float32)


def _pad_rows(batch: dict, weight: np.ndarray, multiple: int) -> tuple[dict, np.ndarray]:
  """Pads every entry to a multiple of ``multiple`` rows with zeros (weight 0)."""
  pad = -weight.shape[0] % multiple
  if not pad:
    return batch, weight
  grow = lambda x: np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
  return {k: grow(v) for k, v in batch.items()}, grow(weight)


def evaluate_model(family: types.ModuleType, model: nnx.Module,
                   batches: Iterable[dict], key: jax.Array, *,
                   ll_kwargs: dict | None = None, progress: bool = False,
                   num_batches: int | None = None) -> dict[str, Any]:
  """Mean log-likelihood and the family's ``eval_metrics`` over ``batches``.

  Each batch is split over the devices of the mesh the model is placed on
  (every device when it is on none) and its per-example numbers are gathered on
  every host, which sums them in float64: with several hosts, each passes its own
  rows of the global batches (`genjax.data.eval_batches`), all hosts run the
  same number of equally shaped batches, and every host gets the global result.
  Rows whose ``mask`` is False (padding) count nothing.

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
  mesh, state = _on_mesh(state)
  eval_fn = _eval_fn(family, tuple(sorted((ll_kwargs or {}).items())), mesh)
  local_devices = mesh.devices.size // jax.process_count()
  sums: dict[str, float] = {}
  vectors: dict[str, np.ndarray] = {}
  count = 0.0
  start = time.time()
  for i, batch in enumerate(batches):
    batch, weight = _pad_rows(*_example_weights(batch), local_devices)
    placed = train_lib.shard_batch({**batch, "__weight": weight}, mesh)
    weight = placed.pop("__weight")
    out = {k: _to_host(v).astype(np.float64)
           for k, v in eval_fn(graphdef, state, placed, weight, jax.random.fold_in(key, i)
                               ).items()}
    w = out.pop("weight")
    for k, v in out.items():
      if v.ndim > 1:  # per-example vectors (e.g. code counts): summed over examples
        vectors[k] = vectors.get(k, 0.0) + (v * w.reshape((-1,) + (1,) * (v.ndim - 1))).sum(0)
      else:
        sums[k] = sums.get(k, 0.0) + float((v * w).sum())
    count += float(w.sum())
    if progress:
      done = i + 1
      rate = count / max(time.time() - start, 1e-9)
      eta = ((num_batches - done) * (time.time() - start) / done
             if num_batches else float("nan"))
      nll = ""
      if "ll" in sums:
        nll = (f"{-sums['ll'] / max(sums['num_tokens'], 1):.4f} nats/token | "
               if "num_tokens" in sums else f"nll {-sums['ll'] / count:.3f} nats | ")
      _log(f"  eval batch {done}/{num_batches or '?'} | {int(count)} examples | "
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
  out["num_examples"] = int(count)
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
  """This host's rows of the global evaluation batches of ``batch_size`` (default
  ``config.eval_batch_size``) examples, with `EVAL_SEED`, not the run's seed."""
  global_size = batch_size or config.eval_batch_size
  return data.eval_batches(split, -(-global_size // jax.process_count()), EVAL_SEED)


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
    devices: devices of the mesh (default: every device of every host).

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

  mesh = make_run_mesh(config, devices)
  ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", config.keep_checkpoints)
  try:
    if ckpt.latest_step() is not None:  # a resume: the run's own files rule
      config = prepare_config(config, workdir)  # e.g. its tokenizer's vocabulary
      if (workdir / "config.json").exists():
        _check_resumable(load_config(workdir), config)
    return _train(config, workdir, family, mesh, ckpt)
  finally:
    ckpt.close()  # on every exit, errors included: else orbax's threads print at exit


def _fsdp(config) -> int:
  """``config.mesh.fsdp`` (1 for configs and saved runs without a ``mesh`` block)."""
  mesh = config.get("mesh") or {}
  return int(mesh.get("fsdp", 1) or 1)


def make_run_mesh(config, devices=None) -> Mesh:
  """The ``(data, fsdp)`` mesh of a run: every device (or ``devices``), with
  ``config.mesh.fsdp`` devices per parameter shard."""
  return train_lib.make_mesh(devices, fsdp=_fsdp(config))


def _initializer(family, graphdef, mesh: Mesh, shardings) -> Callable:
  """The family's data-dependent ``initialize`` as one compiled function of the
  placed state and a global batch: statistics such as ActNorm's are those of the
  global batch (the partitioner reduces across devices and hosts), so every host
  gets the same values, equal to a single-process run's."""
  def init(state, batch, key):
    ts = nnx.merge(graphdef, state)
    family.initialize(ts.model, batch, key)
    return nnx.state(ts)
  return jax.jit(init, donate_argnums=0, out_shardings=shardings,
                 in_shardings=(shardings, train_lib.batch_sharding(mesh),
                               NamedSharding(mesh, P())))


def _train(config, workdir: pathlib.Path, family, mesh, ckpt) -> dict[str, Any]:
  """`train` with its config validated and its checkpointer open."""
  root = jax.random.key(config.seed)
  init_key, train_key, sample_key, eval_key = jax.random.split(root, 4)
  data_seed = config.seed
  main = _is_main()

  create = _creator(family, config, init_key)
  data = run_data.for_config(config, workdir if ckpt.latest_step() is not None else None)
  host_batch = config.batch_size // jax.process_count()
  it = data.train_iterator(host_batch, data_seed)

  latest = ckpt.latest_step()
  if latest is None:
    # one compiled program builds the state in place on the mesh, each device
    # only its own shards (not a program per initialiser op, nor the whole state
    # on one device first)
    graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
    shardings = train_lib.state_shardings(abstract_state, mesh)
    state = jax.jit(lambda: nnx.state(create()), out_shardings=shardings)()
    if getattr(family, "load_pretrained", None) is not None:  # host I/O, fresh starts only
      ts = nnx.merge(graphdef, state)
      family.load_pretrained(ts.model)
      state = jax.device_put(nnx.state(ts), shardings)
    if getattr(family, "initialize", None) is not None:  # data-dependent, fresh starts only
      init_batch = next(data.train_iterator(host_batch, data_seed))
      state = _initializer(family, graphdef, mesh, shardings)(
          state, train_lib.shard_batch(init_batch, mesh), jax.random.fold_in(init_key, 1))
    start = 0
    _log(f"genjax: new run of {config.model.name} on {config.data.name} in {workdir}")
  else:
    graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
    shardings = train_lib.state_shardings(abstract_state, mesh)
    state, data_state, start = ckpt.restore(ckpt_lib.abstract_like(abstract_state, shardings))
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
  fsdp = mesh.shape["fsdp"]
  _log(f"genjax: {num_params:,} parameters, {mesh.devices.size} device(s) "
       f"({jax.devices()[0].platform}) on {jax.process_count()} process(es)"
       f"{f', parameters split over {fsdp}' if fsdp > 1 else ''}, global batch "
       f"{config.batch_size}, steps {start} -> {config.total_steps}")

  step_fn = train_lib.compile_train_step(family, graphdef, mesh, shardings)
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
      path = workdir / "samples" / f"step_{step:08d}.txt"
      if main:
        _write_texts(path, texts)
      writer.write_text(step, "samples", texts)
      return path
    # family.sample compiles once per model structure and shapes, for every run of
    # this process (a fresh jit per run would trace the sampler again)
    images = _to_host(family.sample(nnx.merge(model_graphdef, model_state(state)), key,
                                    num=config.num_samples))
    path = workdir / "samples" / f"step_{step:08d}.png"
    if main:
      images_lib.save_grid(path, images, binary=_binary(config))
    writer.write_images(step, "samples", images_lib.grid(images, binary=_binary(config)))
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
    ckpt.save(step, state, it.get_state())  # asynchronous: orbax writes in the background

  # Device metrics are fetched one logging interval late: at step s the host
  # fetches the steps up to the previous log step, which the device has long
  # finished, and never waits for the step it has just queued. Before an
  # evaluation, a sample grid, a checkpoint or a stop every step is fetched and
  # checked (those wait for the state anyway). A row's step rate is its steps over
  # the time from the previous row's end to its own end, less the evaluation,
  # sampling and checkpoint time in between; a step ends when its metrics are
  # ready: when the host waited for them, the end of the wait, else (the device
  # was ahead of the host) the time the host queued the step.
  pending: list[tuple[int, train_lib.Metrics, float]] = []
  due: list[int] = []  # log steps whose rows wait for their metrics
  window: dict[str, float] = {}
  window_n = 0
  mark = {"step": start, "time": time.time(), "work": 0.0}
  t_start = time.time()
  step = start
  stopped_by = None
  last_eval, last_eval_step = None, None

  def fetch(upto: int) -> None:
    """Fetches and checks every pending step <= ``upto``; writes the rows due."""
    nonlocal window, window_n, last
    for end in [s for s in due if s <= upto] + [upto]:
      ready = [p for p in pending if p[0] <= end]
      del pending[:len(ready)]
      queued = (ready[-1][2] if ready and all(
          x.is_ready() for x in jax.tree.leaves(ready[-1][1])) else None)
      for (s, _, _), host in zip(ready, jax.device_get([p[1] for p in ready])):
        _check_finite((s, host), ckpt, workdir)
        for k, v in host.items():
          window[k] = window.get(k, 0.0) + float(v)
        window_n += 1
      if due and due[0] == end:
        due.pop(0)
        last = log_row(end, queued or time.time())
        window, window_n = {}, 0

  def log_row(end: int, ended: float) -> dict[str, Any]:
    now = time.time()
    rate = max(end - mark["step"], 1) / max(ended - mark["time"] - mark["work"], 1e-9)
    mark.update(step=end, time=ended, work=0.0)
    row = {k: v / max(window_n, 1) for k, v in window.items() if k != "finite"}
    row.update(steps_per_sec=rate, examples_per_sec=rate * config.batch_size,
               wall_seconds=now - t_start)
    throughput = f"{rate * config.batch_size:.0f} ex/s"
    if data.kind == "text":
      row["tokens_per_sec"] = rate * config.batch_size * data.block_size
      throughput = f"{row['tokens_per_sec']:.0f} tok/s | {1e3 / rate:.1f} ms/step"
    writer.write(end, row)
    losses = "".join(f"{k} {v:.4f} | " for k, v in row.items()
                     if k == "loss" or k.endswith("_loss"))
    _log(f"step {end}/{config.total_steps} | {losses}{rate:.1f} steps/s | {throughput} | "
         f"elapsed {_fmt_time(now - t_start)} | "
         f"ETA {_fmt_time((config.total_steps - end) / rate)}")
    return row

  try:
    with _stop_signals() as stop:
      while step < config.total_steps:
        batch = train_lib.shard_batch(next(it), mesh)
        state, metrics = step_fn(state, batch, train_key)
        step += 1
        pending.append((step, metrics, time.time()))
        if step == start + 1:  # keep compilation out of the step rate
          jax.block_until_ready(metrics)
          # the run has started (state, data, mesh and the compiled step all
          # work): only now do the config and tokenizer claim the work directory
          save_config(config, workdir)
          data.save(workdir)
          fetch(step)
          mark.update(step=step, time=time.time())
        is_log = step % config.log_every == 0 or step == config.total_steps
        is_eval = bool(config.eval_every) and step % config.eval_every == 0
        is_sample = bool(config.sample_every) and step % config.sample_every == 0
        is_ckpt = step % config.checkpoint_every == 0
        if is_log:
          if due:
            fetch(due[-1])  # the previous interval's row: one interval late
          due.append(step)
        elif len(pending) >= 2 * _FETCH_EVERY:
          fetch(pending[_FETCH_EVERY - 1][0])  # bounded, lagged checks of long windows
        if not (is_eval or is_sample or is_ckpt or stop["signal"]):
          continue
        fetch(step)  # every action below sees checked, finite steps
        t_work = time.time()
        if is_eval:
          last_eval, last_eval_step = run_eval(step, state), step
        if is_sample:
          write_samples(step, state)
        if is_ckpt:
          save(step, state)
        mark["work"] += time.time() - t_work  # the step rate counts train steps only
        if stop["signal"]:
          stopped_by = stop["signal"]
          break
      fetch(step)
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
        f"non-finite loss or metric at step {step} ({bad}); training stopped and "
        f"nothing from this step on was saved; {where}. {_nan_fix(workdir)}")


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


def compile_setup(config, devices=None, batch=None) -> types.SimpleNamespace:
  """A fresh train state, a batch and the jitted train step of ``config``.

  For inspection and benchmarks: no example is read. The batch is a synthetic one
  shaped like the config's data, or ``batch`` (host arrays); given a batch, the
  data is not read at all (`prepare_config` with ``read_data=False``), so the
  config must hold the model fields the data would fill (a token model's
  ``vocab_size``). The train step is not yet compiled (``inspection.inspect_jitted``
  compiles it).
  """
  config = prepare_config(config, read_data=batch is None)
  family = models.get(config.model.name)
  mesh = make_run_mesh(config, devices)
  ts = _creator(family, config, jax.random.key(config.seed))()
  num_params = train_lib.count_params(ts.model)
  graphdef, state = nnx.split(ts)
  shardings = train_lib.state_shardings(state, mesh)
  return types.SimpleNamespace(
      step=train_lib.compile_train_step(family, graphdef, mesh, shardings),
      state=jax.device_put(state, shardings),
      batch=train_lib.shard_batch(synthetic_batch(config) if batch is None else batch, mesh),
      key=jax.random.key(config.seed), num_params=num_params,
      num_devices=mesh.devices.size, device_kind=mesh.devices.flat[0].device_kind,
      config=config, family=family, graphdef=graphdef, mesh=mesh)


# ------------------------------------------------------- restore / evaluate / sample


def restore_model(workdir: str | pathlib.Path, step: int | None = None, devices=None):
  """The model of the newest (or given) checkpoint in ``workdir``.

  The model is placed on the run's mesh (`make_run_mesh`: every device of every
  host, or ``devices``), replicated or split over ``fsdp`` as
  ``config.mesh.fsdp`` says, whatever mesh the checkpoint was written from: every
  host can use it.

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
    if step is not None and step not in ckpt.all_steps():
      raise FileNotFoundError(
          f"no checkpoint at step {step} in {workdir / 'checkpoints'}; its checkpoints "
          f"are at steps {', '.join(map(str, sorted(ckpt.all_steps())))}")
    graphdef, abstract_state = nnx.split(nnx.eval_shape(_creator(family, config, key)))
    shardings = train_lib.state_shardings(abstract_state, make_run_mesh(config, devices))
    state, _, step = ckpt.restore(ckpt_lib.abstract_like(abstract_state, shardings), step)
  finally:
    ckpt.close()
  return family, nnx.merge(graphdef, state).model, config, step


def evaluate(workdir: str | pathlib.Path, *, num_samples: int = 5000,
             num_time_samples: int = 1, step: int | None = None,
             split: str = "test", batch_size: int | None = None,
             seed: int = 0, sample_metrics: bool | None = None,
             num_metric_samples: int = 10_000, feature_network=None) -> dict[str, Any]:
  """Evaluates the newest (or ``step``'s) checkpoint on ``split``; writes
  ``workdir/eval.json``.

  Args:
    workdir: a run directory.
    num_samples: importance samples for families whose ``log_likelihood`` takes
      ``num_samples`` (the VAE's IWAE bound).
    num_time_samples: Monte-Carlo draws of the time per example for families
      whose ``log_likelihood`` takes ``num_time_samples`` (diffusion's bound: more
      draws, a smaller spread of the estimate, proportionally more time).
    step: the checkpoint to evaluate (default: the newest).
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
  family, model, config, step = restore_model(workdir, step)
  check_writable(workdir / "eval.json", "the evaluation output", directory=False)
  data = run_data.for_config(config, workdir)
  ll_kwargs = {}
  params = inspect.signature(family.log_likelihood).parameters
  if "num_samples" in params and has_likelihood(family):
    ll_kwargs["num_samples"] = int(num_samples)
  if "num_time_samples" in params and has_likelihood(family):
    ll_kwargs["num_time_samples"] = int(num_time_samples)  # log_likelihood checks it
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
    num_batches = len(batches)
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
    return _write_eval(workdir, out)
  out["view"] = config.data.view
  shape = tuple(config.model.input_shape)
  if sample_metrics is None:
    sample_metrics = feature_network is not None or metrics.has_feature_network(shape)
  if sample_metrics:
    _log(f"genjax: FID, KID, precision and recall of {num_metric_samples} samples")
    real = np.concatenate([b["image"][b["mask"]] for b in batches])
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
                           f"training; fixed draw (evaluation seed {EVAL_SEED}, the same "
                           f"for every run) of the {split} split for evaluation")
  return _write_eval(workdir, out)


def _write_eval(workdir: pathlib.Path, out: dict[str, Any]) -> dict[str, Any]:
  """Writes ``eval.json`` (on process 0 only) and returns ``out``."""
  if _is_main():
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
  images = _to_host(family.sample(model, key, num=num, **sample_kwargs))  # compiled once
  save = lambda path, imgs, **kw: (images_lib.save_grid(path, imgs, binary=_binary(config), **kw)
                                   if _is_main() else path)
  paths = [save(out_path, images)]
  vis = getattr(family, "visualizations", None)
  if extras and vis is not None:
    data = run_data.for_config(config, workdir)
    # the split's first 16 examples on every host (one batch, not this host's rows)
    batch = data.eval_batches("test", 16, EVAL_SEED, shard_index=0, shard_count=1)[0]
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k != "mask"}
    for name, imgs in vis(model, jax.random.fold_in(key, 1), batch).items():
      imgs = _to_host(imgs)
      cols = int(round(math.sqrt(imgs.shape[0])))
      paths.append(save(out_path.with_name(f"{out_path.stem}_{name}.png"), imgs, cols=cols))
  return paths


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
  return [head + tokenizer.decode(row) for row in _to_host(tokens)]


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
  return texts, _write_texts(path, texts) if _is_main() else path


def sample_captions(workdir: str | pathlib.Path, caption: str, *, num: int = 16,
                    candidates: int = 1, out: str | None = None, seed: int = 0,
                    **sample_kwargs) -> pathlib.Path:
  """A grid of ``num`` strips that a text-to-image run (DALL-E) draws for ``caption``,
  each the best of ``candidates`` by the run's CLIP-style scorer; written as a PNG
  (default ``WORKDIR/samples/caption_<step>.png``) by process 0."""
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
  if not _is_main():
    return path
  return images_lib.save_grid(path, _to_host(images), binary=False,
                              cols=max(1, int(round(math.sqrt(num)))))
