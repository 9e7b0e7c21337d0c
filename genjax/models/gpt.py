"""GPT (Radford et al. 2018, 2019): a decoder-only transformer over tokens.

``p(x_1..x_{T-1} | x_0) = prod_t p(x_t | x_<t)``: token and position embeddings, a
`genjax.nn.transformer.Stack` of pre-LayerNorm blocks (one ``lax.scan`` over depth),
a final LayerNorm and an output layer tied to the token embedding. Positions are
learned (``positions="learned"``, at most ``block_size``) or rotary (``"rotary"``).
Dropout (rate ``dropout``) acts on the embeddings and the residual branches, in
`loss` only. ``dtype="bfloat16"`` computes activations and matmuls in bfloat16
with float32 parameters; the logits and the loss are float32.

Protocol (token models): ``batch = {"tokens": int32[B, T]}`` with ``T <= block_size
+ 1`` and optionally ``"mask": bool[B, T]`` (False on right padding, evaluation
only). `loss` is the mean next-token cross-entropy in nats over positions 1..T-1;
`log_likelihood` is ``float[B]``, the log-probability in nats of tokens 1..T-1 given
token 0; `conditionals` gives logits ``[B, T, V]`` where position ``t`` is the
distribution of token ``t + 1`` given tokens ``0..t``; `sample` draws continuations
through a key/value cache (`genjax.models.decoding`).

Config (``config.model``): ``name="gpt"``, ``vocab_size`` (filled from the tokenizer),
``block_size`` (64), ``num_layers`` (4), ``num_heads`` (4), ``width`` (128),
``mlp_ratio`` (4), ``dropout`` (0.0), ``positions`` (``"learned"`` | ``"rotary"``),
``bias`` (True), ``dtype`` (``"float32"`` | ``"bfloat16"``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genjax import compiled
from genjax.models import decoding
from genjax.models import parse_fields
from genjax.nn import dense
from genjax.nn import transformer
from genjax.nn import layers
from genjax.nn.layers import dropout as _dropout

LIKELIHOOD = "exact"
POSITIONS = ("learned", "rotary")
DTYPES = layers.DTYPES  # compute dtypes (parameters float32)
_DEFAULTS = dict(name="gpt", vocab_size=None, block_size=64, num_layers=4, num_heads=4,
                 width=128, mlp_ratio=4, dropout=0.0, positions="learned", bias=True,
                 dtype="float32")


class GPT(nnx.Module):
  """Token embedding, optional learned positions, the block stack, tied output.

  ``positions="none"`` adds no position embedding (for subclasses that add their
  own in `embed_tokens`, as DALL-E's rows and columns).
  """

  def __init__(self, vocab_size, block_size, num_layers, num_heads, width, mlp_ratio,
               dropout, positions, bias, dtype, *, rngs: nnx.Rngs):
    self.vocab_size, self.block_size = int(vocab_size), int(block_size)
    self.dropout, self.positions = float(dropout), positions
    self.dtype = DTYPES[dtype]
    init = nnx.initializers.normal(transformer.INIT_STD)
    self.embed = nnx.Embed(vocab_size, width, embedding_init=init, rngs=rngs)
    self.pos_embed = (nnx.Embed(block_size, width, embedding_init=init, rngs=rngs)
                      if positions == "learned" else None)
    self.stack = transformer.Stack(num_layers, width, num_heads, mlp_ratio=mlp_ratio,
                                   bias=bias, rotary=positions == "rotary",
                                   dtype=self.dtype, rngs=rngs)
    self.ln_f = nnx.LayerNorm(width, use_bias=bias, dtype=self.dtype, rngs=rngs)

  def embed_tokens(self, tokens_BxT, positions_BxT, key=None):
    x = self.embed(tokens_BxT)
    if self.pos_embed is not None:
      x = x + self.pos_embed(positions_BxT)
    return _dropout(key, self.dropout, x).astype(self.dtype)

  def logits(self, x_BxTxD, positions_BxT=None):
    """Output logits (float32) through the tied embedding; ``positions_BxT`` (of
    the inputs) is for subclasses whose vocabulary depends on the position."""
    del positions_BxT
    return dense.matmul_transposed(self.ln_f(x_BxTxD).astype(jnp.float32),
                                   self.embed.embedding[...])

  def __call__(self, tokens_BxT, positions_BxT=None, mask_BxTxS=None, key=None):
    """Logits ``[B, T, V]`` of the next token at every position (causal)."""
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    k_embed, k_stack = jax.random.split(key) if key is not None else (None, None)
    x = self.embed_tokens(tokens_BxT, positions_BxT, k_embed)
    x = self.stack(x, positions_BxT, mask_BxTxS, key=k_stack, rate=self.dropout)
    return self.logits(x, positions_BxT)

  def decoder(self) -> decoding.Decoder:
    """The `decoding.Decoder` of this model (its functions close over it)."""
    def forward(tokens, valid):
      return self(tokens, decoding.positions(valid), decoding.window_mask(valid))

    def prefill(tokens, valid):
      pos = decoding.positions(valid)
      x, cache = self.stack(self.embed_tokens(tokens, pos), pos,
                            decoding.window_mask(valid), return_cache=True)
      return self.logits(x, pos), cache

    def step(cache, token_B, position_B, slot, visible_BxS):
      x = self.embed_tokens(token_B[:, None], position_B[:, None])
      x, cache = self.stack.decode(x, position_B[:, None], cache, slot, visible_BxS[:, None])
      return self.logits(x, position_B[:, None])[:, 0], cache

    return decoding.Decoder(forward, prefill, step)


# ------------------------------------------------------------------- config


def check_transformer_fields(cfg: dict, int_fields) -> None:
  """The checks a transformer family's fields share (GPT, DALL-E): ``int_fields``
  are ints >= 1, the width splits into heads, dropout is a rate, rotary positions
  (when a ``positions`` field is given) have an even head width."""
  for name in int_fields:
    value = cfg[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"config.model.{name} must be an int >= 1, got {value!r}")
  if cfg["width"] % cfg["num_heads"]:
    raise ValueError(f"config.model.width={cfg['width']} must be divisible by "
                     f"config.model.num_heads={cfg['num_heads']}")
  if cfg.get("positions") == "rotary" and (cfg["width"] // cfg["num_heads"]) % 2:
    raise ValueError("rotary positions need an even head width (width / num_heads)")
  if not 0.0 <= float(cfg["dropout"]) < 1.0:
    raise ValueError(f"config.model.dropout must be in [0, 1), got {cfg['dropout']!r}")


def _parse(config) -> dict:
  cfg = parse_fields(config, _DEFAULTS, {"positions": POSITIONS, "dtype": tuple(DTYPES)},
                     image=False)
  if not cfg["vocab_size"]:
    raise ValueError("config.model.vocab_size is not set: the launcher fills it from the "
                     "tokenizer; set it when building a model yourself")
  check_transformer_fields(cfg, ("vocab_size", "block_size", "num_layers", "num_heads",
                                 "width", "mlp_ratio"))
  return cfg


def check_config(config) -> None:
  """Checks the model block of an experiment config (``vocab_size`` may be unset)."""
  model = dict(config.model)
  model["vocab_size"] = model.get("vocab_size") or 1  # filled from the tokenizer
  _parse(model)


def build(config, key: jax.Array) -> GPT:
  """Builds a GPT from ``config`` (the ``model`` block of an experiment config).

  Args:
    config: ``ConfigDict`` or dict with ``vocab_size`` and the fields of the module
      docstring.
    key: PRNG key of the initialisation.

  Returns:
    The `GPT` module.

  Raises:
    ValueError: for an unknown field or a bad value, named with the fix.

  References:
    Radford et al., "Improving Language Understanding by Generative Pre-Training",
    2018; "Language Models are Unsupervised Multitask Learners", 2019.
  """
  cfg = _parse(config)
  del cfg["name"]
  return compiled.build(GPT, key, **cfg)


def model_flops(model_config, batch_size: int) -> float:
  """Model FLOPs of one training step (forward and backward) of ``batch_size``
  sequences of ``block_size`` tokens: ``6 N`` per token for the ``N`` non-embedding
  parameters plus ``6 L T d`` for attention, and the output layer (Kaplan et al.
  2020, PaLM's MFU, Chowdhery et al. 2022, appendix B)."""
  cfg = dict(model_config)
  d, layers, t, v = cfg["width"], cfg["num_layers"], cfg["block_size"], cfg["vocab_size"]
  per_layer = (4 + 2 * cfg.get("mlp_ratio", 4)) * d * d
  per_token = 6 * (layers * per_layer + d * v) + 6 * layers * t * d
  return float(per_token * t * batch_size)


def make_optimizer(model: GPT, optimizer_config, total_steps: int) -> nnx.Optimizer:
  """AdamW with weight decay on the matrices only (not biases, norms or positions)."""
  from genjax import train  # pylint: disable=g-import-not-at-top
  return nnx.Optimizer(model, train.make_tx(optimizer_config, total_steps,
                                            weight_decay_mask=decay_mask), wrt=nnx.Param)


def decay_mask(params):
  """True for the weight matrices (``kernel``) and the token embedding; False for
  biases, LayerNorm scales and the learned positions (as nanoGPT, plus positions)."""
  def decays(path, _):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    names = [n for n in names if n != "value"]
    return names[-1] in ("kernel", "embedding") and "pos_embed" not in names
  return jax.tree_util.tree_map_with_path(decays, params)


# ----------------------------------------------------------------- protocol


def _check_tokens(model: GPT, tokens, name="batch['tokens']", max_len=None) -> None:
  shape = tuple(getattr(tokens, "shape", ()))
  max_len = model.block_size + 1 if max_len is None else max_len
  if len(shape) != 2 or not 1 <= shape[1] <= max_len:
    raise ValueError(f"{name} has shape {shape}; expected int32[B, T] with 1 <= T <= {max_len} "
                     f"(the model's block_size is {model.block_size})")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"{name} has dtype {tokens.dtype}; expected int32 token ids")


def token_log_probs(model: GPT, batch, key=None):
  """Per-target ``log p(token t | tokens < t)`` ``[B, T-1]`` (zero where masked) and
  the mask's weights, from one forward pass (dropout from ``key``)."""
  if not isinstance(batch, dict) or "tokens" not in batch:
    raise TypeError("a token batch must be a dict with 'tokens' (int32[B, T])"
                    + (f"; got keys {sorted(batch)}" if isinstance(batch, dict) else ""))
  tokens = batch["tokens"]
  _check_tokens(model, tokens)
  if tokens.shape[1] < 2:
    raise ValueError("batch['tokens'] needs T >= 2: token 0 is the context of token 1")
  logits = model(tokens[:, :-1], key=key)
  lp_BxT = -optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
  weight = batch.get("mask")
  weight = (jnp.ones_like(lp_BxT) if weight is None
            else jnp.asarray(weight)[:, 1:].astype(jnp.float32))
  return lp_BxT * weight, weight


@compiled.model_function
def log_likelihood(model: GPT, batch, key: jax.Array | None = None) -> jax.Array:
  """``log p(tokens 1..T-1 | token 0)`` in nats, ``float32[B]`` (no dropout).

  Positions where ``batch["mask"]`` is False (padding) count nothing.
  """
  del key
  lp, _ = token_log_probs(model, batch)
  return lp.sum(-1)


@compiled.model_function
def loss(model: GPT, batch, key: jax.Array | None = None):
  """Mean next-token cross-entropy in nats over positions 1..T-1 (dropout from ``key``).

  Returns:
    ``(loss, metrics)``; metrics ``loss`` and ``bits_per_token``.
  """
  lp, weight = token_log_probs(model, batch, key)
  nll = -lp.sum() / jnp.maximum(weight.sum(), 1.0)
  return nll, {"loss": nll, "bits_per_token": nll / math.log(2.0)}


@compiled.model_function
def eval_metrics(model: GPT, batch, key=None):
  """Per-sequence numbers for `experiments.evaluate`: the predicted tokens."""
  del model, key
  mask = batch.get("mask")
  n = batch["tokens"].shape[1] - 1
  if mask is None:
    return {"num_tokens": jnp.full((batch["tokens"].shape[0],), n, jnp.float32)}
  return {"num_tokens": jnp.asarray(mask)[:, 1:].sum(-1).astype(jnp.float32)}


@compiled.model_function
def conditionals(model: GPT, tokens_BxT: jax.Array) -> jax.Array:
  """Logits ``float32[B, T, V]``: position ``t`` is ``p(token t+1 | tokens 0..t)``."""
  _check_tokens(model, tokens_BxT, "tokens", model.block_size)
  return model(tokens_BxT)


def sample(model: GPT, key: jax.Array, num: int, prompt=None, prompt_mask=None,
           max_new_tokens: int | None = None, temperature=1.0, top_k: int | None = None,
           top_p: float | None = None, method: str = "cached", guidance=None,
           unconditional_prompt=None, unconditional_mask=None) -> jax.Array:
  """Continues ``prompt`` by ``max_new_tokens`` tokens, for ``num`` sequences.

  Compiled once per ``num``, prompt shape, ``max_new_tokens`` and ``method``: the
  temperature and the filters are traced, so changing them compiles nothing.

  Args:
    model: a `GPT`.
    key: PRNG key; output column ``c`` uses ``fold_in(key, c)`` whatever the method.
    num: number of sequences.
    prompt: ``int32[P]`` (shared) or ``int32[num, P]``, left-padded where rows
      differ in length (`decoding.pad_prompts`); None starts from token 0.
    prompt_mask: ``bool[num, P]``, False on padding (None: all real).
    max_new_tokens: tokens to draw (default ``block_size``); sequences may outgrow
      the context, which then shifts (`genjax.models.decoding`).
    temperature: divides the logits; 0 is greedy.
    top_k, top_p: keep the ``k`` most likely tokens / the nucleus of mass ``p``
      (None: no filter).
    method: ``"cached"`` (a key/value cache, O(context) per token) or ``"naive"``
      (the whole window per token); the same tokens for the same key.
    guidance: classifier-free guidance scale ``w`` (None: off; traced): each token
      is drawn from ``l_c + w (l_c - l_u)``, the logits given ``prompt`` and given
      ``unconditional_prompt`` (`genjax.models.decoding`); 0 is the plain model.
    unconditional_prompt: with ``guidance``, ``int32[num, P]`` (or ``[P]``): each
      row's prompt with its condition removed.
    unconditional_mask: its padding mask (None: all real).

  Returns:
    ``int32[num, P + max_new_tokens]``.

  Raises:
    ValueError: a bad method, filter, prompt shape or length, or guidance without
      an unconditional prompt.
  """
  decoding.check_args(method, temperature, top_k, top_p)
  steps = model.block_size if max_new_tokens is None else int(max_new_tokens)
  if steps < 0:
    raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
  prompt = (np.zeros((num, 1), np.int32) if prompt is None
            else np.asarray(prompt) if not isinstance(prompt, jax.Array) else prompt)
  if prompt.ndim == 1:
    prompt = jnp.broadcast_to(prompt, (num, prompt.shape[0]))
  if prompt.ndim != 2 or prompt.shape[0] != num:
    raise ValueError(f"prompt has shape {prompt.shape}; expected [P] or [num={num}, P]")
  mask = (jnp.ones(prompt.shape, bool) if prompt_mask is None
          else jnp.broadcast_to(jnp.asarray(prompt_mask, bool), prompt.shape))
  uncond = None
  if guidance is not None:
    if unconditional_prompt is None:
      raise ValueError("guidance needs unconditional_prompt: each row's prompt with its "
                       "condition removed")
    uncond = jnp.broadcast_to(jnp.asarray(unconditional_prompt, jnp.int32), prompt.shape)
    uncond = (uncond, jnp.ones(prompt.shape, bool) if unconditional_mask is None
              else jnp.broadcast_to(jnp.asarray(unconditional_mask, bool), prompt.shape),
              jnp.float32(guidance))
  return _sample(model, key, jnp.asarray(prompt, jnp.int32), mask, steps,
                 jnp.float32(temperature),
                 jnp.int32(top_k if top_k is not None else model.vocab_size),
                 jnp.float32(top_p if top_p is not None else 1.0), method, uncond)


@compiled.model_function(static_argnames=("max_new_tokens", "method"))
def _sample(model: GPT, key, prompt, prompt_mask, max_new_tokens, temperature, top_k, top_p,
            method, guided=None):
  """``guided``: None, or ``(unconditional prompt, its mask, guidance scale)``."""
  uncond, uncond_mask, guidance = guided if guided is not None else (None, None, 0.0)
  return decoding.sample(model.decoder(), key, prompt, prompt_mask,
                         max_new_tokens=max_new_tokens, context=model.block_size,
                         method=method, temperature=temperature, top_k=top_k, top_p=top_p,
                         unconditional_BxP=uncond, unconditional_mask_BxP=uncond_mask,
                         guidance=guidance)
