r"""Caption accuracy of a DALL-E run, its image tokenizer, sample quality and speed.

  python -m experiments.benchmarks.caption_accuracy --workdir=runs/dalle_mnist \
      [--per_set=200] [--candidates=8] [--fid_samples=2000] [--seed=0] \
      [--guidance=3.0] [--temperature=1.0] [--top_k=0] [--chunk=1600] [--out=FILE]

For MNIST strips (genjax's MNIST classifier reads the digits):

* Tokenizer: mean squared error of the test digits' token reconstructions (0..255
  scale), the classifier's accuracy on them against the true labels, the codebook
  usage and perplexity over the test digits.
* Caption accuracy: for captions of single digits, of three-digit strips and of
  held-out combinations (strips with a held-out neighbour pair, never trained on),
  ``--per_set`` captions each (phrasings drawn like the training captions), the
  fraction of generated strips whose digits the classifier reads as the caption
  asked: every digit in its slot, and the remaining slots blank (mean pixel below
  20). ``--candidates`` strips are drawn per caption, once, and read four ways:
  "one draw", the mean over all of them (the accuracy of a single draw); "CLIP
  rerank", the one the run's CLIP-style scorer ranks first; "classifier rerank",
  the one the classifier ranks first (its log-probability of each asked digit, and
  blanks where blanks belong: the paper's stand-in for CLIP on single digits; it is
  also the judge, so that column is optimistic); and "any candidate", the fraction
  of captions with at least one right strip, what a perfect reranker would reach.
* FID, KID, precision and recall of ``--fid_samples`` generated single digits
  (one draw each) against the MNIST test digits (genjax.metrics).
* Sampling seconds per strip (cached, batches of up to ``--chunk`` strips; the first
  set's time includes compiling).

Every strip is drawn with ``--temperature``, ``--top_k`` (0: off) and, when given,
``--guidance`` (classifier-free guidance against the empty caption; the run must be
trained with ``config.model.caption_dropout > 0``).

Writes ``--out`` (default ``WORKDIR/caption_accuracy.json``) and prints a table. It
asserts nothing.
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import flags

from experiments import common


def _define_flags() -> None:
  """The command line's flags, defined only when this module is the program."""
  global _WORKDIR, _PER_SET, _CANDIDATES, _FID_SAMPLES, _SEED
  global _GUIDANCE, _TEMPERATURE, _TOP_K, _CHUNK, _OUT
  _WORKDIR = flags.DEFINE_string("workdir", None, "a DALL-E run directory", required=True)
  _PER_SET = flags.DEFINE_integer("per_set", 200, "captions per caption set")
  _CANDIDATES = flags.DEFINE_integer("candidates", 8, "strips drawn per caption to rerank")
  _FID_SAMPLES = flags.DEFINE_integer("fid_samples", 2000, "single digits for FID/KID")
  _SEED = flags.DEFINE_integer("seed", 0, "seed of the captions and samples")
  _GUIDANCE = flags.DEFINE_float("guidance", None, "classifier-free guidance scale (None: off)")
  _TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "divides the logits")
  _TOP_K = flags.DEFINE_integer("top_k", 0, "keep the k most likely image tokens (0: all)")
  _CHUNK = flags.DEFINE_integer("chunk", 1600, "strips drawn per sampler call (memory)")
  _OUT = flags.DEFINE_string("out", None, "the JSON written (default "
                             "WORKDIR/caption_accuracy.json)")


_BLANK = 20.0  # mean pixel (0..255) below which a slot counts as blank


def _caption_sets(num: int, pairs, seed: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax.data import captions  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  sets = {"single digit": [], "three digits": [], "held-out pairs": []}
  for i in range(num):
    sets["single digit"].append([i % 10])
    while True:
      d = [int(x) for x in rng.integers(0, 10, 3)]
      if not captions.contains_pair(d, pairs):
        break
    sets["three digits"].append(d)
    a, b = pairs[i % len(pairs)]
    extra = int(rng.integers(0, 10))
    sets["held-out pairs"].append([a, b, extra] if i % 2 else [extra, a, b])
  return {name: [(d, captions.caption(d, int(rng.integers(0, 1 << 30)))) for d in digits]
          for name, digits in sets.items()}


def _slots(images, slots: int):
  import numpy as np  # pylint: disable=g-import-not-at-top
  w = images.shape[2] // slots
  return np.stack([images[:, :, s * w:(s + 1) * w] for s in range(slots)], 1)


def _correct(classifier_logits, blank, digits_list):
  """Whether each strip shows its digits in order and blanks after them (``blank``:
  [M, slots], which slots are blank)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  pred = classifier_logits.argmax(-1)
  out = []
  for i, digits in enumerate(digits_list):
    n = len(digits)
    ok = all(pred[i, s] == digits[s] and not blank[i, s] for s in range(n))
    out.append(ok and bool(np.all(blank[i, n:])))
  return np.asarray(out)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  from genjax import metrics  # pylint: disable=g-import-not-at-top
  from genjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from genjax.metrics import classifier as clf  # pylint: disable=g-import-not-at-top
  from genjax.models import dalle, dvae  # pylint: disable=g-import-not-at-top
  common.setup()
  workdir = pathlib.Path(_WORKDIR.value)
  family, model, config, step = experiment.restore_model(workdir)
  if family is not dalle:
    raise ValueError(f"{workdir} is a {config.model.name} run, not a DALL-E run")
  source = config.data.get("source") or "mnist"
  if source != "mnist":
    raise ValueError("caption accuracy needs MNIST strips (genjax's classifier reads "
                     f"28x28 digits); this run used config.data.source={source!r}")
  kw = dict(data_dir=config.data.get("data_dir") or None,
            mnist_dir=config.data.get("mnist_dir") or None)
  net = metrics.feature_network(clf.MNIST_SHAPE, **kw)
  test = pipeline.load_arrays("mnist", "test", **kw)
  out = {"workdir": str(workdir), "step": step, "device": jax.devices()[0].device_kind}
  sampling = dict(temperature=_TEMPERATURE.value, top_k=_TOP_K.value or None,
                  guidance=_GUIDANCE.value)
  out["sampling"] = {**sampling, "candidates": _CANDIDATES.value, "per_set": _PER_SET.value}
  print(f"sampling: {json.dumps(out['sampling'])}", flush=True)

  # the image tokenizer on the test digits
  tokens = np.concatenate([np.asarray(dvae.encode(model.tokenizer, test["image"][i:i + 500]))
                           for i in range(0, len(test["image"]), 500)])
  recon = np.concatenate([np.asarray(dvae.decode(model.tokenizer, tokens[i:i + 500]))
                          for i in range(0, len(tokens), 500)])
  counts = np.bincount(tokens.reshape(-1), minlength=model.codebook_size)
  freq = counts / counts.sum()
  out["tokenizer"] = {
      "mse": float(np.mean((recon.astype(np.float64) - test["image"]) ** 2)),
      "classifier_accuracy_on_reconstructions": clf.accuracy(net, recon, test["label"]),
      "classifier_accuracy_on_originals": clf.accuracy(net, test["image"], test["label"]),
      "codebook_usage": float(np.mean(counts > 0)),
      "codebook_perplexity": float(np.exp(-np.sum(freq[freq > 0] * np.log(freq[freq > 0]))))}
  print(f"tokenizer: {json.dumps(out['tokenizer'])}", flush=True)

  def read(images, digits_list):
    """Classifier log-probabilities [M, slots, 10] of each slot, which slots are
    blank, and whether each strip is right (``digits_list``: one entry per strip)."""
    crops = _slots(images, model.slots)
    logits = clf.logits(net, crops.reshape(-1, *crops.shape[2:]))
    logp = np.asarray(jax.nn.log_softmax(logits)).reshape(len(images), model.slots, 10)
    blank = crops.reshape(*crops.shape[:2], -1).mean(-1) < _BLANK
    return logp, blank, _correct(logp, blank, digits_list)

  def classifier_scores(logp, blank, digits_list):
    """The classifier as a reranker: log p(digit) of every captioned slot, and a
    large penalty for each captioned slot that is blank or unused slot that is not."""
    scores = np.empty(len(logp))
    for i, digits in enumerate(digits_list):
      n = len(digits)
      wrong_blanks = blank[i, :n].sum() + (~blank[i, n:]).sum()
      scores[i] = sum(logp[i, s, d] for s, d in enumerate(digits)) - 1e3 * wrong_blanks
    return scores

  key = jax.random.key(_SEED.value)
  pairs = tuple(tuple(p) for p in config.data.get("holdout_pairs", ((8, 3),)))
  num = _CANDIDATES.value
  chunk = max(1, _CHUNK.value // num)  # captions per sampler call
  out["caption_accuracy"] = {}
  for k, (name, items) in enumerate(_caption_sets(_PER_SET.value, pairs,
                                                  _SEED.value).items()):
    right, by_clip, by_classifier, seconds = [], [], [], 0.0
    for c in range(0, len(items), chunk):
      digits_list = [d for d, _ in items[c:c + chunk]]
      texts = [t for _, t in items[c:c + chunk]]
      t0 = time.perf_counter()
      tokens, images = dalle.draw_candidates(
          model, jax.random.fold_in(jax.random.fold_in(key, k), c), texts, num, **sampling)
      seconds += time.perf_counter() - t0
      flat = images.reshape(-1, *images.shape[2:])
      each = [d for d in digits_list for _ in range(num)]
      logp, blank, ok = read(flat, each)
      right.append(ok.reshape(len(texts), num))
      by_clip.append(np.asarray(dalle.clip_scores(model, tokens, flat)).reshape(len(texts), num))
      by_classifier.append(classifier_scores(logp, blank, each).reshape(len(texts), num))
    right = np.concatenate(right)
    rows = np.arange(len(right))
    pick = lambda scores: float(right[rows, np.argmax(np.concatenate(scores), -1)].mean())
    row = {"one draw": float(right.mean()), "CLIP rerank": pick(by_clip),
           "classifier rerank": pick(by_classifier),
           "any candidate": float(right.any(-1).mean()),
           "seconds_per_strip": seconds / right.size}
    out["caption_accuracy"][name] = row
    print(f"{name:15s} " + " | ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)

  # sample quality of single digits (slot 0 of single-digit captions, one draw each)
  n = _FID_SAMPLES.value
  texts = [f"a handwritten {w}" for w in
           np.asarray(["zero", "one", "two", "three", "four", "five", "six", "seven",
                       "eight", "nine"])[np.arange(n) % 10]]
  fakes = []
  for i in range(0, n, 500):
    images, _ = dalle.generate(model, jax.random.fold_in(key, 100 + i), texts[i:i + 500],
                               **sampling)
    fakes.append(_slots(np.asarray(images), model.slots)[:, 0])
  out["single_digit_sample_metrics"] = metrics.sample_metrics(
      test["image"], np.concatenate(fakes), network=net)
  out["single_digit_sample_metrics"]["num_samples"] = n
  print(f"single digits vs MNIST test: {json.dumps(out['single_digit_sample_metrics'])}")
  path = pathlib.Path(_OUT.value) if _OUT.value else workdir / "caption_accuracy.json"
  path.write_text(json.dumps(out, indent=2) + "\n")
  print(f"(written to {path})")


if __name__ == "__main__":
  _define_flags()
  common.run(main)
