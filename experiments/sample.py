r"""Samples from the newest checkpoint of a run: a PNG grid, or text.

  python -m experiments.sample --workdir=runs/vae_digits --num=64 --out=samples.png
  python -m experiments.sample --workdir=runs/gpt_char --prompt="ROMEO:" --num=4 \
      --max_new_tokens=500 [--temperature=0.8 --top_k=40 --top_p=0.95 --method=naive]
  python -m experiments.sample --workdir=runs/dalle_mnist --caption="two seven" --num=16 \
      [--candidates=8 --guidance=3.0 --temperature=0.9 --top_k=32]
  python -m experiments.sample --workdir=runs/diffusion_mnist --sampler=ddim --steps=50 \
      [--eta=0.0 --guidance=2.0]

Image runs: families with visualizations (the VAE's reconstructions, interpolations
and, for a 2-D latent space, the latent map) get them beside the grid as
<out>_<name>.png; --method and --temperature go to families whose sampler takes them
(the pixel models), --steps, --sampler, --eta and --guidance to diffusion; a family
whose sampler does not take an option says so and lists the options it has. Text runs print the decoded samples, prompt included, and write
them to --out (default WORKDIR/samples/sample_<step>.txt). Text-to-image runs
(DALL-E) write a grid of strips for --caption, each the best of --candidates by the
run's CLIP-style scorer; --guidance contrasts the caption with the empty one
(classifier-free guidance, for runs trained with config.model.caption_dropout > 0).
"""

from __future__ import annotations

from absl import flags

from experiments import common

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory", required=True)
_NUM = flags.DEFINE_integer("num", None, "number of samples (default 64 images, 4 texts)")
_OUT = flags.DEFINE_string("out", None, "output file (default: WORKDIR/samples/)")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
_EXTRAS = flags.DEFINE_bool("extras", True, "images: also write the family's visualizations")
_METHOD = flags.DEFINE_string("method", None, "sampler: cached or naive (autoregressive models)")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "divides the logits (0: greedy, text)")
_PROMPT = flags.DEFINE_string("prompt", None, "text: the text to continue (default a newline)")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", None,
                                       "text: tokens drawn after the prompt (default 256)")
_TOP_K = flags.DEFINE_integer("top_k", None, "text: keep the k most likely tokens")
_TOP_P = flags.DEFINE_float("top_p", None, "text: keep the nucleus of probability p")
_STEPS = flags.DEFINE_integer("steps", None, "diffusion: reverse steps (default the config's)")
_SAMPLER = flags.DEFINE_string("sampler", None, "diffusion: ancestral, ddim or ode")
_ETA = flags.DEFINE_float("eta", None, "diffusion: DDIM's noise scale (0: deterministic)")
_GUIDANCE = flags.DEFINE_float("guidance", None,
                               "classifier-free guidance scale w (0: the conditional model): "
                               "diffusion (class-conditional), text-to-image (DALL-E)")
_CAPTION = flags.DEFINE_string("caption", None, "text-to-image (DALL-E): the caption")
_CANDIDATES = flags.DEFINE_integer("candidates", 1, "text-to-image: strips drawn per "
                                   "image, the best kept by the run's CLIP-style scorer")

_ONLY = {"text": ("prompt", "max_new_tokens"), "captions": ("caption", "candidates"),
         "token": ("top_k", "top_p"), "image": ("extras",)}


def _given(names) -> list[str]:
  return [n for n in names if flags.FLAGS[n].present]


def main(argv):
  del argv
  # the flags are checked against the run before JAX starts: a mistake fails in a moment
  from genjax import rundir  # pylint: disable=g-import-not-at-top
  from genjax.data import kinds  # pylint: disable=g-import-not-at-top
  if _NUM.value is not None:
    rundir.check_num(_NUM.value)
  config = rundir.load_config(_WORKDIR.value)
  kind = kinds.kind(config.data.name)
  options = {k: v for k, v in (("method", _METHOD.value), ("temperature", _TEMPERATURE.value),
                               ("steps", _STEPS.value), ("sampler", _SAMPLER.value),
                               ("eta", _ETA.value), ("guidance", _GUIDANCE.value))
             if v is not None}
  allowed = {"image": ("image",), "text": ("text", "token"),
             "captions": ("captions", "token")}[kind]
  for group, names in _ONLY.items():
    wrong = _given(names) if group not in allowed else []
    if wrong:
      runs = {"token": "text and text-to-image", "captions": "text-to-image"}.get(
          group, group)
      raise ValueError(f"{', '.join('--' + w for w in wrong)} apply to {runs} runs only; "
                       f"{_WORKDIR.value} is a {kind} run of {config.model.name}")
  if kind == "text" and _GUIDANCE.value is not None:
    raise ValueError(f"--guidance applies to diffusion and text-to-image runs only; "
                     f"{_WORKDIR.value} is a text run of {config.model.name}")
  if kind == "captions" and _CAPTION.value is None:
    raise ValueError("a text-to-image run needs --caption=\"...\" (e.g. \"two seven\")")
  if _OUT.value:
    rundir.check_writable(_OUT.value, "--out", directory=False)
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  common.setup()
  if kind == "captions":
    options.update({k: v for k, v in (("top_k", _TOP_K.value), ("top_p", _TOP_P.value))
                    if v is not None})
    print(experiment.sample_captions(_WORKDIR.value, _CAPTION.value, num=_NUM.value or 16,
                                     candidates=_CANDIDATES.value, out=_OUT.value,
                                     seed=_SEED.value, **options))
    return
  if kind == "image":
    for path in experiment.sample(_WORKDIR.value, num=_NUM.value or 64, out=_OUT.value,
                                  seed=_SEED.value, extras=_EXTRAS.value, **options):
      print(path)
    return
  options.update({k: v for k, v in (("top_k", _TOP_K.value), ("top_p", _TOP_P.value))
                  if v is not None})
  texts, path = experiment.sample_text(
      _WORKDIR.value, num=_NUM.value or 4, out=_OUT.value, seed=_SEED.value,
      prompt="\n" if _PROMPT.value is None else _PROMPT.value,
      max_new_tokens=256 if _MAX_NEW_TOKENS.value is None else _MAX_NEW_TOKENS.value,
      **options)
  for i, t in enumerate(texts):
    print(f"=== sample {i} ===\n{t}")
  print(f"(written to {path})")


if __name__ == "__main__":
  common.run(main)
