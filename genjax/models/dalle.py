"""DALL-E (Ramesh et al. 2021): one transformer over caption tokens, then image tokens.

Stage 2 of DALL-E, built from the `gpt` transformer: the sequence is ``[BOS, caption
characters (padded with 0 to a fixed length L), image tokens]``, the image tokens
being the codes of a frozen image tokenizer (`genjax.models.dvae`, trained in its
own run, ``config.model.tokenizer_workdir``) for each of the strip's ``slots``
28x28 digits, slot by slot, each in raster order. One **joint vocabulary**: ids
``0 .. V_text - 1`` are text (``V_text`` = caption characters, padding and BOS),
``V_text ..`` image codes; the output layer is tied to it and masked by position, so
a position predicting a caption token gives probability to text ids only and one
predicting an image token to image codes only (equivalent to two output heads).
Positions: learned embeddings for the caption, and for image tokens the sum of a
learned row and a learned column embedding (the column runs over the whole strip).
The loss weighs the caption's cross-entropy by 1/8 and the image's by 7/8, as the
paper. `log_likelihood` is ``log p(image tokens | caption)`` in nats per strip.

A small contrastive text-image model (`Clip`: a character-level text encoder and a
convolutional image encoder, trained with the symmetric InfoNCE loss of Radford et
al. 2021 beside the transformer, on the same batches, with a caption one edit away
from each strip's as a hard negative) scores generated images for
reranking (`clip_scores`). `sample` draws caption-conditioned images through the
GPT key/value-cache scan (`genjax.models.decoding`) and decodes them with the
frozen tokenizer; with no caption the model samples the caption too. Training with
``caption_dropout`` > 0 (the empty caption for that fraction of strips) makes the
same transformer an unconditional model too, for classifier-free guidance at
sampling (``guidance=w``: image tokens from ``l_c + w (l_c - l_u)``).

Batches: ``{"tokens": int32[B, 1 + L + N], "image": uint8[B, h, slots * w, 1]}``,
optionally ``"negative_caption": int32[B, L]`` (hard negatives of the scorer)
(`genjax.data.run_data.CaptionData` builds them, tokenizing every digit once).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genjax import compiled
from genjax import nn
from genjax.data import captions as captions_lib
from genjax.models import decoding
from genjax.models import dvae
from genjax.models import parse_fields
from genjax.models import gpt
from genjax.nn import transformer
from genjax.nn.layers import dropout as _dropout

LIKELIHOOD = "log p(image tokens | caption), exact given the frozen tokenizer's tokens"
TEXT_VOCAB = captions_lib.VOCAB_SIZE + 1  # characters, padding 0 and BOS
BOS = TEXT_VOCAB - 1
TEXT_WEIGHT, IMAGE_WEIGHT = 1.0 / 8.0, 7.0 / 8.0
_DEFAULTS = dict(name="dalle", tokenizer_workdir="", tokenizer=None, slots=3,
                 num_layers=4, num_heads=4, width=128, mlp_ratio=4, dropout=0.0, bias=True,
                 dtype="float32", clip_width=64, caption_dropout=0.0)


def _unit(v):
  return v / jnp.linalg.norm(v, axis=-1, keepdims=True).clip(1e-6)


class Clip(nnx.Module):
  """Caption and strip encoders into one space, for reranking (CLIP-style)."""

  def __init__(self, caption_length: int, image_shape, width: int, *, rngs: nnx.Rngs):
    h, w, c = image_shape
    self.chars = nnx.Embed(TEXT_VOCAB, width, rngs=rngs)
    self.text = nn.MLP(caption_length * width, (2 * width, width), rngs=rngs)
    self.image = nn.ConvEncoder((h, w, c), (16, 32), width, rngs=rngs)
    self.log_scale = nnx.Param(jnp.asarray(math.log(10.0)))

  def embed_text(self, caption_BxL):
    return _unit(self.text(self.chars(caption_BxL).reshape(caption_BxL.shape[0], -1)))

  def embed(self, caption_BxL, image_BxHxWxC):
    i = self.image(jnp.asarray(image_BxHxWxC, jnp.float32) / 127.5 - 1.0)
    return self.embed_text(caption_BxL), _unit(i)

  def loss(self, caption_BxL, image_BxHxWxC, negative_BxL=None):
    """Symmetric InfoNCE over the batch, and the accuracy of each image's pick of
    its caption. With ``negative_BxL`` (captions one edit away from each strip's,
    `captions.near_miss`) every image also has to prefer its caption to all of
    them: hard negatives, the near misses a reranker must tell apart."""
    t, i = self.embed(caption_BxL, image_BxHxWxC)
    scale = jnp.exp(self.log_scale[...])
    text_to_image = scale * t @ i.T
    image_to_text = text_to_image.T
    if negative_BxL is not None:
      image_to_text = jnp.concatenate(
          [image_to_text, scale * i @ self.embed_text(negative_BxL).T], axis=1)
    labels = jnp.arange(t.shape[0])
    xent = 0.5 * (
        optax.softmax_cross_entropy_with_integer_labels(text_to_image, labels).mean()
        + optax.softmax_cross_entropy_with_integer_labels(image_to_text, labels).mean())
    return xent, jnp.mean(jnp.argmax(image_to_text, -1) == labels)


class DALLE(gpt.GPT):
  """The GPT stack over ``[BOS, caption, image tokens]`` with a joint, position-masked
  vocabulary, caption and row/column position embeddings, a frozen tokenizer."""

  def __init__(self, tokenizer_config, tokenizer_workdir, slots, num_layers, num_heads,
               width, mlp_ratio, dropout, bias, dtype, clip_width, caption_dropout=0.0, *,
               rngs: nnx.Rngs):
    self.caption_dropout = float(caption_dropout)
    self.tokenizer = dvae.build(tokenizer_config, rngs.params())
    self.tokenizer_workdir = str(tokenizer_workdir)
    self.codebook_size = self.tokenizer.codebook_size
    self.grid = self.tokenizer.grid_shape  # (h, w) tokens of one digit
    self.slots = int(slots)
    self.caption_length = captions_lib.max_caption_length()
    self.text_length = 1 + self.caption_length  # BOS + caption
    self.num_image_tokens = self.slots * self.grid[0] * self.grid[1]
    super().__init__(TEXT_VOCAB + self.codebook_size, self.text_length +
                     self.num_image_tokens, num_layers, num_heads, width, mlp_ratio,
                     dropout, "none", bias, dtype, rngs=rngs)
    init = nnx.initializers.normal(transformer.INIT_STD)
    self.text_pos = nnx.Embed(self.text_length, width, embedding_init=init, rngs=rngs)
    self.row_pos = nnx.Embed(self.grid[0], width, embedding_init=init, rngs=rngs)
    self.col_pos = nnx.Embed(self.slots * self.grid[1], width, embedding_init=init, rngs=rngs)
    h, w, c = self.tokenizer.input_shape
    self.image_shape = (h, self.slots * w, c)
    self.clip = Clip(self.caption_length, self.image_shape, clip_width, rngs=rngs)

  def position_table(self):
    """``[S, D]``: caption positions, then each image token's row + column."""
    gh, gw = self.grid
    i = np.arange(self.num_image_tokens)
    slot, row, col = i // (gh * gw), i % (gh * gw) // gw, i % gw
    image = self.row_pos(jnp.asarray(row)) + self.col_pos(jnp.asarray(slot * gw + col))
    return jnp.concatenate([self.text_pos.embedding[...], image], axis=0)

  def embed_tokens(self, tokens_BxT, positions_BxT, key=None):
    x = self.embed(tokens_BxT) + self.position_table()[positions_BxT]
    return _dropout(key, self.dropout, x).astype(self.dtype)

  def logits(self, x_BxTxD, positions_BxT=None):
    """Joint-vocabulary logits, masked: text ids where the next token is caption,
    image codes where it is image."""
    logits = super().logits(x_BxTxD)
    next_is_text = (positions_BxT + 1 < self.text_length)[..., None]
    is_text_id = (jnp.arange(logits.shape[-1]) < TEXT_VOCAB)
    return jnp.where(next_is_text == is_text_id, logits, -1e9)


# ------------------------------------------------------------------- build


def _parse(config) -> dict:
  cfg = parse_fields(config, _DEFAULTS, {"dtype": tuple(gpt.DTYPES)}, image=False)
  if cfg["tokenizer"] is None:
    raise ValueError(
        "config.model.tokenizer is not set: the launcher fills it from the image "
        "tokenizer's run (config.model.tokenizer_workdir); set both when building a "
        "model yourself")
  gpt.check_transformer_fields(cfg, ("slots", "num_layers", "num_heads", "width",
                                     "mlp_ratio", "clip_width"))
  if not 0.0 <= float(cfg["caption_dropout"]) < 1.0:
    raise ValueError(f"config.model.caption_dropout must be in [0, 1), got "
                     f"{cfg['caption_dropout']!r} (the fraction of training strips whose "
                     "caption is replaced by the empty one, for guidance)")
  return cfg


def build(config, key: jax.Array) -> DALLE:
  """Builds DALL-E's transformer (with a freshly initialised tokenizer of the
  configured architecture; `load_pretrained` loads the trained one).

  Args:
    config: the ``model`` block: ``tokenizer`` (the tokenizer run's model block,
      filled by the launcher), ``tokenizer_workdir``, ``slots`` and the GPT fields.
    key: PRNG key of the initialisation.

  Returns:
    The `DALLE` module.

  References:
    Ramesh et al., "Zero-Shot Text-to-Image Generation", ICML 2021.
  """
  cfg = _parse(config)
  del cfg["name"]
  cfg["tokenizer_config"] = dict(cfg.pop("tokenizer"))
  return compiled.build(DALLE, key, **cfg)


_TRAINED = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("tokenizer")))


def make_optimizer(model: DALLE, optimizer_config, total_steps: int) -> nnx.Optimizer:
  """AdamW on everything but the frozen image tokenizer (weight decay on matrices)."""
  from genjax import train  # pylint: disable=g-import-not-at-top
  return nnx.Optimizer(model, train.make_tx(optimizer_config, total_steps,
                                            weight_decay_mask=gpt.decay_mask), wrt=_TRAINED)


def update(model: DALLE, opt, batch, key):
  """One step on the transformer's loss plus the CLIP scorer's (disjoint parameters)."""
  from genjax import train  # pylint: disable=g-import-not-at-top
  lossv, metrics, norms = train.gradient_step(
      model, opt, lambda m: _total_loss(m, batch, key))  # opt.wrt is _TRAINED
  return {**metrics, "loss": lossv, **norms}


def load_pretrained(model: DALLE) -> None:
  """Loads the trained image tokenizer (from ``tokenizer_workdir``) into the model."""
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  _, tokenizer, _, _ = experiment.restore_model(model.tokenizer_workdir)
  nnx.update(model.tokenizer, nnx.state(tokenizer))


def _weights(model: DALLE, t: int) -> jax.Array:
  """Per-target weights ``[t]`` (targets 1..t): 1/8 over the caption, 7/8 over the image."""
  target = jnp.arange(1, t + 1)
  text = target < model.text_length
  n_text, n_image = model.text_length - 1, model.num_image_tokens
  return jnp.where(text, TEXT_WEIGHT / n_text, IMAGE_WEIGHT / n_image)


def empty_captions(model: DALLE, tokens_BxT: jax.Array) -> jax.Array:
  """The sequences with every caption replaced by the empty caption (BOS, then
  padding): the prompt of the unconditional model that guidance contrasts with."""
  caption = (jnp.arange(tokens_BxT.shape[1]) >= 1) & (jnp.arange(tokens_BxT.shape[1])
                                                      < model.text_length)
  return jnp.where(caption[None, :], 0, tokens_BxT)


def _transformer_loss(model: DALLE, batch, key=None):
  """With a ``key`` (training) and ``caption_dropout`` p, each strip's caption is
  the empty one with probability p (its caption tokens then count nothing), so
  that one model is both conditional and unconditional (classifier-free guidance)."""
  tokens = batch["tokens"]
  n_text = model.text_length - 1  # targets 1 .. L are caption tokens
  weights = jnp.broadcast_to(_weights(model, tokens.shape[1] - 1), (tokens.shape[0],
                                                                     tokens.shape[1] - 1))
  keep = jnp.ones((tokens.shape[0], 1), bool)
  if key is not None and model.caption_dropout > 0:
    key, drop_key = jax.random.split(key)
    keep = ~jax.random.bernoulli(drop_key, model.caption_dropout, (tokens.shape[0], 1))
    tokens = jnp.where(keep, tokens, empty_captions(model, tokens))
    weights = jnp.where(keep | (jnp.arange(weights.shape[1]) >= n_text), weights, 0.0)
  lp, _ = gpt.token_log_probs(model, {"tokens": tokens}, key)
  nll = -jnp.sum(lp * weights, -1).mean()
  kept = jnp.maximum(keep.sum(), 1)
  return nll, {"text_nll": -jnp.sum(lp[:, :n_text] * keep) / kept / n_text,
               "image_nll": -lp[:, n_text:].sum(-1).mean() / model.num_image_tokens}


def _total_loss(model: DALLE, batch, key):
  nll, metrics = _transformer_loss(model, batch, key)
  clip_loss, clip_acc = model.clip.loss(batch["tokens"][:, 1:model.text_length],
                                        batch["image"], batch.get("negative_caption"))
  return nll + clip_loss, {"transformer_loss": nll, **metrics, "clip_loss": clip_loss,
                           "clip_accuracy": clip_acc}


@compiled.model_function
def loss(model: DALLE, batch, key=None):
  """``1/8`` caption + ``7/8`` image cross-entropy (nats per token), plus the CLIP
  scorer's contrastive loss when the batch has images."""
  if "image" in batch:
    total, metrics = _total_loss(model, batch, key)
  else:
    total, metrics = _transformer_loss(model, batch, key)
  return total, {"loss": total, **metrics}


@compiled.model_function
def log_likelihood(model: DALLE, batch, key=None) -> jax.Array:
  """``log p(image tokens | caption)`` in nats per strip, ``float32[B]``."""
  del key
  lp, _ = gpt.token_log_probs(model, {"tokens": batch["tokens"]})
  return lp[:, model.text_length - 1:].sum(-1)


@compiled.model_function
def eval_metrics(model: DALLE, batch, key=None):
  """Image tokens per strip (for nats per image token) and the caption's nats."""
  del key
  lp, _ = gpt.token_log_probs(model, {"tokens": batch["tokens"]})
  n = batch["tokens"].shape[0]
  return {"num_tokens": jnp.full((n,), float(model.num_image_tokens)),
          "caption_nats": -lp[:, :model.text_length - 1].sum(-1)}


def caption_tokens(model: DALLE, texts) -> np.ndarray:
  """``int32[N, 1 + L]``: BOS and the padded character ids of each caption."""
  rows = [captions_lib.encode_caption(t, model.caption_length) for t in texts]
  return np.concatenate([np.full((len(rows), 1), BOS, np.int32), np.stack(rows)], axis=1)


@compiled.model_function
def decode_image_tokens(model: DALLE, image_tokens_BxN) -> jax.Array:
  """Joint-vocabulary image tokens ``[B, N]`` to strips ``uint8[B, h, slots * w, 1]``."""
  gh, gw = model.grid
  codes = jnp.clip(image_tokens_BxN - TEXT_VOCAB, 0, model.codebook_size - 1)
  grids = codes.reshape(-1, model.slots, gh, gw)
  digits = dvae.decode.eager(model.tokenizer, grids.reshape(-1, gh, gw))
  h, w, c = model.tokenizer.input_shape
  digits = digits.reshape(-1, model.slots, h, w, c)
  return jnp.concatenate([digits[:, s] for s in range(model.slots)], axis=2)


def sample_tokens(model: DALLE, key, num: int, captions=None, temperature=1.0, top_k=None,
                  top_p=None, method: str = "cached", guidance=None) -> jax.Array:
  """Sequences ``int32[num, 1 + L + N]``: the caption (given as ``int32[num, 1 + L]``
  or ``[1 + L]``, or sampled when None) and the image tokens, one compiled scan.

  ``guidance`` (None: off): classifier-free guidance scale ``w``; each image token
  is drawn from ``l_c + w (l_c - l_u)``, the logits given the caption and given the
  empty caption (0 is the plain conditional model; dalle-mini's ``condition_scale``
  is ``1 + w``). Needs captions and a model trained with ``caption_dropout > 0``."""
  if guidance is not None:
    if captions is None:
      raise ValueError("guidance needs captions: it contrasts each caption with the "
                       "empty one")
    if model.caption_dropout <= 0:
      raise ValueError("guidance needs a model trained with config.model.caption_dropout "
                       "> 0 (it never saw the empty caption); this one has 0")
  if captions is None:
    prompt = np.full((num, 1), BOS, np.int32)
  else:
    prompt = np.asarray(captions, np.int32)
    prompt = np.broadcast_to(prompt, (num, prompt.shape[-1])) if prompt.ndim == 1 else prompt
    if prompt.shape != (num, model.text_length):
      raise ValueError(f"captions must be int32[num={num}, {model.text_length}] "
                       f"(dalle.caption_tokens); got shape {prompt.shape}")
  new = model.block_size - prompt.shape[1]
  uncond = None if guidance is None else empty_captions(model, jnp.asarray(prompt))
  return gpt.sample(model, key, num, prompt=prompt, max_new_tokens=new,
                    temperature=temperature, top_k=top_k, top_p=top_p, method=method,
                    guidance=guidance, unconditional_prompt=uncond)


def sample(model: DALLE, key, num: int, captions=None, temperature=1.0, top_k=None,
           top_p=None, method: str = "cached", guidance=None) -> jax.Array:
  """Strips ``uint8[num, h, slots * w, 1]`` for ``captions`` (`caption_tokens`; None:
  the model samples the captions too). See `sample_tokens`."""
  tokens = sample_tokens(model, key, num, captions, temperature, top_k, top_p, method,
                         guidance)
  return decode_image_tokens(model, tokens[:, model.text_length:])


@compiled.model_function
def clip_scores(model: DALLE, captions_BxT, images_BxHxWxC) -> jax.Array:
  """CLIP-style agreement ``float32[B]`` of each caption (`caption_tokens`) with its
  image, for reranking candidates."""
  t, i = model.clip.embed(captions_BxT[:, 1:], images_BxHxWxC)
  return jnp.sum(t * i, -1)


def prepare_run(config, workdir):
  """Trains the config's ``image_tokenizer`` into ``WORKDIR/image_tokenizer`` first
  when ``config.model.tokenizer_workdir`` is empty (a finished one is reused)."""
  if config.model.get("tokenizer_workdir"):
    return config
  if "image_tokenizer" not in config:
    raise ValueError("config.model.tokenizer_workdir is empty and the config has no "
                     "image_tokenizer block: name a trained dvae run's work directory")
  import ml_collections  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from genjax import experiment  # pylint: disable=g-import-not-at-top
  directory = (pathlib.Path(workdir) / "image_tokenizer").absolute()
  experiment._log(f"genjax: stage 1, the image tokenizer, in {directory}")  # pylint: disable=protected-access
  experiment.train(config.image_tokenizer, directory)
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.tokenizer_workdir = str(directory)
  return config


def draw_candidates(model: DALLE, key, texts, num: int, **sample_kwargs):
  """``num`` strips per caption text, in one batch of the sampler.

  Returns:
    ``(caption tokens int32[len(texts) * num, 1 + L], strips uint8[len(texts), num,
    h, slots * w, 1])``, the tokens repeated as the strips are laid out.
  """
  if num < 1:
    raise ValueError(f"candidates must be >= 1, got {num}")
  tokens = np.repeat(caption_tokens(model, texts), num, axis=0)
  images = np.asarray(sample(model, key, len(tokens), captions=tokens, **sample_kwargs))
  return tokens, images.reshape(len(texts), num, *images.shape[1:])


def generate(model: DALLE, key, texts, candidates: int = 1, scorer=None, **sample_kwargs):
  """For each caption text, draws ``candidates`` strips and keeps the best one.

  Args:
    model: a `DALLE`.
    key: PRNG key.
    texts: caption strings.
    candidates: strips drawn per caption (reranking among them).
    scorer: ``(caption_tokens [M, 1 + L], images [M, ...]) -> float[M]``, higher is
      better; default `clip_scores`.
    **sample_kwargs: ``temperature``, ``top_k``, ``top_p``, ``method``, ``guidance``
      of `sample`.

  Returns:
    ``(images uint8[len(texts), h, slots * w, 1], scores float[len(texts), candidates])``.
  """
  tokens, images = draw_candidates(model, key, texts, candidates, **sample_kwargs)
  flat = images.reshape(-1, *images.shape[2:])
  scores = np.asarray(clip_scores(model, tokens, flat) if scorer is None
                      else scorer(tokens, flat)).reshape(len(texts), candidates)
  return images[np.arange(len(texts)), np.argmax(scores, -1)], scores


def check_config(config) -> None:
  _parse(dict(config.model, tokenizer=config.model.get("tokenizer") or {}))
