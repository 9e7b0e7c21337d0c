"""Sampling from token models as compiled loops: a KV-cache scan, and a naive one.

Shared by every token model (GPT, the DALL-E transformer). A model provides a
`Decoder`: a full forward over a window of tokens, the same forward that also
returns a key/value cache (the prefill), and one cached step. Both samplers are one
``lax.scan`` over the new tokens:

* ``"cached"``: prefill the prompt, then each step feeds the newest token through
  the cache (written in place at its slot) and reads the next logits: O(context)
  work per token.
* ``"naive"``: each step reruns the whole window: O(context^2) attention and
  O(context) matmul work per token.

Prompts of different lengths share a batch by **left padding**: ``prompt_mask`` is
False on each row's padding; padded slots are never attended to and positions
count only real tokens, so a row's tokens do not depend on the others. The last
prompt column must be real in every row.

Context: a model sees at most ``context`` tokens (its block size). When a sequence
outgrows it, the window shifts: the oldest tokens are dropped so that the newest
``keep`` (default half the context) remain, they are re-read (prefilled) at
positions from 0, and generation continues; both samplers follow this rule, so
they give the same tokens for the same key.

Randomness: the token at column ``c`` of the output is drawn by Gumbel-max with the
noise of ``fold_in(key, c)``, after temperature, top-k and top-p (nucleus)
filtering, so the two samplers agree exactly.

Classifier-free guidance: given an ``unconditional`` prompt per row (the same model
with its condition removed, e.g. an empty caption), both prompts are continued with
the same tokens and each token is drawn from ``l_c + w (l_c - l_u)`` (conditional
and unconditional logits, guidance scale ``w``; 0 is the conditional model, as in
the diffusion family; dalle-mini's ``condition_scale`` is ``1 + w``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

METHODS = ("cached", "naive")


class Decoder(NamedTuple):
  """A token model as three functions (closures over the model).

  Attributes:
    forward: ``(tokens_BxS, valid_BxS) -> logits_BxSxV``: causal over the window,
      padded slots (``valid`` False) never attended to, positions counting the
      valid tokens from 0.
    prefill: the same, returning ``(logits_BxSxV, cache)``; the cache's leaves
      hold the slots on axis 2 (``[layers, B, S, ...]``).
    step: ``(cache, token_B, position_B, slot, visible_BxS) -> (logits_BxV, cache)``:
      writes the token's keys and values at ``slot`` (a traced int) and attends to
      the slots of ``visible``.
  """
  forward: Callable[..., jax.Array]
  prefill: Callable[..., tuple[jax.Array, Any]]
  step: Callable[..., tuple[jax.Array, Any]]


def positions(valid_BxS: jax.Array) -> jax.Array:
  """Each slot's position: the number of valid slots before it (0 for padding)."""
  return jnp.maximum(jnp.cumsum(valid_BxS.astype(jnp.int32), axis=-1) - 1, 0)


def window_mask(valid_BxS: jax.Array) -> jax.Array:
  """``bool[B, S, S]``: causal, and only valid keys."""
  s = valid_BxS.shape[-1]
  causal = jnp.tril(jnp.ones((s, s), bool))
  return causal[None] & valid_BxS[:, None, :]


def check_args(method: str, temperature, top_k, top_p) -> None:
  """Raises ValueError for an unknown method or a filter value out of range (Python
  values only: traced values are not checked)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
  if isinstance(temperature, (int, float)) and temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
  if top_k is not None and isinstance(top_k, (int, float)) and not (
      float(top_k).is_integer() and top_k >= 1):
    raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
  if top_p is not None and isinstance(top_p, (int, float)) and not 0 < top_p <= 1:
    raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")


def filter_logits(logits_BxV: jax.Array, top_k=None, top_p=None) -> jax.Array:
  """Sets to -inf every logit outside the top ``k`` and, among those, outside the
  nucleus ``p`` (the smallest set of most likely tokens whose probability reaches
  ``p``). ``top_k`` and ``top_p`` may be traced (one compilation for every value);
  None disables a filter.

  References:
    Fan, Lewis & Dauphin, "Hierarchical Neural Story Generation", ACL 2018 (top-k);
    Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020 (top-p).
  """
  if top_k is None and top_p is None:
    return logits_BxV
  v = logits_BxV.shape[-1]
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  rank_V = jnp.arange(v)
  if top_k is not None:
    k = jnp.clip(jnp.asarray(top_k, jnp.int32), 1, v)
    sorted_BxV = jnp.where(rank_V < k, sorted_BxV, -jnp.inf)
  if top_p is not None:
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    # the first token is always kept (nothing before it)
    keep = (before_BxV < top_p) | (rank_V == 0) | (jnp.asarray(top_p) >= 1.0)
    sorted_BxV = jnp.where(keep, sorted_BxV, -jnp.inf)
  num_kept_B = jnp.sum(jnp.isfinite(sorted_BxV), axis=-1)
  cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, num_kept_B[:, None] - 1, axis=-1)
  return jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)


def draw(key: jax.Array, column, logits_BxV: jax.Array, temperature=1.0, top_k=None,
         top_p=None) -> jax.Array:
  """The token of output column ``column`` for every row: Gumbel-max on the filtered
  ``logits / temperature`` with the noise of ``fold_in(key, column)``; greedy
  (argmax) where ``temperature`` is 0."""
  logits_BxV = logits_BxV.astype(jnp.float32)
  gumbel_BxV = jax.random.gumbel(jax.random.fold_in(key, column), logits_BxV.shape)
  scaled = filter_logits(logits_BxV / jnp.maximum(temperature, 1e-6), top_k, top_p)
  sampled = jnp.argmax(scaled + gumbel_BxV, axis=-1)
  return jnp.where(temperature > 0, sampled, jnp.argmax(logits_BxV, axis=-1)).astype(jnp.int32)


def _setup(prompt_BxP, prompt_mask_BxP, max_new_tokens: int, context: int,
           keep: int | None):
  b, p = prompt_BxP.shape
  if p < 1:
    raise ValueError("the prompt must hold at least one token")
  if p > context:
    raise ValueError(f"the prompt has {p} tokens, more than the model's context of "
                     f"{context}: keep its last {context} tokens")
  keep = context // 2 if keep is None else int(keep)
  if not 1 <= keep < context + 1:
    raise ValueError(f"keep must be in [1, {context}], got {keep}")
  if prompt_mask_BxP is None:
    prompt_mask_BxP = jnp.ones((b, p), bool)
  total = p + max_new_tokens
  # `context` spare columns, so that a window's dynamic_slice never clamps
  buf = jnp.zeros((b, total + context), jnp.int32).at[:, :p].set(prompt_BxP)
  valid = jnp.ones((b, total + context), bool).at[:, :p].set(prompt_mask_BxP.astype(bool))
  return b, p, keep, buf, valid


def _window(buf, valid, start, end, context: int):
  """Tokens and validity of the columns ``[start, start + context)``, valid only
  before ``end``."""
  tokens = jax.lax.dynamic_slice_in_dim(buf, start, context, axis=1)
  ok = jax.lax.dynamic_slice_in_dim(valid, start, context, axis=1)
  return tokens, ok & (start + jnp.arange(context) < end)[None, :]


def sample(decoder: Decoder, key: jax.Array, prompt_BxP: jax.Array,
           prompt_mask_BxP: jax.Array | None = None, *, max_new_tokens: int, context: int,
           method: str = "cached", temperature=1.0, top_k: int | None = None,
           top_p: float | None = None, keep: int | None = None,
           unconditional_BxP: jax.Array | None = None,
           unconditional_mask_BxP: jax.Array | None = None, guidance=0.0) -> jax.Array:
  """Continues every prompt by ``max_new_tokens`` tokens.

  Args:
    decoder: the model's `Decoder`.
    key: PRNG key; column ``c`` is drawn with ``fold_in(key, c)``.
    prompt_BxP: ``int32[B, P]``, left-padded where rows differ in length.
    prompt_mask_BxP: ``bool[B, P]``, False on padding (None: all real).
    max_new_tokens: tokens to draw (static).
    context: the model's context (block size), static.
    method: ``"cached"`` or ``"naive"``: the same tokens for the same key.
    temperature: divides the logits; 0 is greedy.
    top_k, top_p: optional filters (None: off; values may be traced).
    keep: tokens kept when the window shifts (default ``context // 2``).
    unconditional_BxP: for classifier-free guidance, each row's unconditional
      prompt (the same shape as ``prompt_BxP``; None: no guidance).
    unconditional_mask_BxP: its padding mask (None: all real).
    guidance: the guidance scale ``w`` (may be traced): tokens are drawn from
      ``l_c + w (l_c - l_u)``; 0 is the conditional model.

  Returns:
    ``int32[B, P + max_new_tokens]``: the prompts (padding as given) and the new tokens.
  """
  check_args(method, temperature, top_k, top_p)
  rows = prompt_BxP.shape[0]
  if unconditional_BxP is not None:  # both streams in one batch, the same tokens
    if unconditional_BxP.shape != prompt_BxP.shape:
      raise ValueError(f"the unconditional prompts have shape {unconditional_BxP.shape}; "
                       f"expected the prompts' {prompt_BxP.shape}")
    ones = jnp.ones(prompt_BxP.shape, bool)
    prompt_mask_BxP = jnp.concatenate([
        ones if prompt_mask_BxP is None else prompt_mask_BxP,
        ones if unconditional_mask_BxP is None else unconditional_mask_BxP])
    prompt_BxP = jnp.concatenate([prompt_BxP, unconditional_BxP])
  b, p, keep, buf, valid = _setup(prompt_BxP, prompt_mask_BxP, max_new_tokens, context, keep)

  def pick(logits, c):
    if unconditional_BxP is None:
      return draw(key, c, logits, temperature, top_k, top_p)
    cond, uncond = logits[:rows].astype(jnp.float32), logits[rows:].astype(jnp.float32)
    token = draw(key, c, cond + guidance * (cond - uncond), temperature, top_k, top_p)
    return jnp.concatenate([token, token])

  if method == "naive":
    def naive_step(carry, c):
      buf, start = carry
      start = jnp.where(c - start > context, c - keep, start)
      tokens, ok = _window(buf, valid, start, c, context)
      logits_BxSxV = decoder.forward(tokens, ok)
      logits_BxV = jax.lax.dynamic_index_in_dim(logits_BxSxV, c - 1 - start, 1, False)
      buf = jax.lax.dynamic_update_slice_in_dim(buf, pick(logits_BxV, c)[:, None], c, 1)
      return (buf, start), None

    buf, _ = jax.lax.scan(naive_step, (buf, jnp.int32(0)),
                          jnp.arange(p, p + max_new_tokens, dtype=jnp.int32))[0]
    return buf[:rows, :p + max_new_tokens]

  def prefill(buf, start, end, length):
    """Reads columns [start, end) (at most ``length``) into a fresh cache of
    ``context`` slots; returns it with its slot validity, count and last logits."""
    tokens, ok = _window(buf, valid, start, end, length)
    logits_BxSxV, cache = decoder.prefill(tokens, ok)
    last = jax.lax.dynamic_index_in_dim(logits_BxSxV, end - 1 - start, 1, False)
    pad = context - length
    if pad:  # the slots after the window stay empty (never seen)
      cache = jax.tree.map(lambda a: jnp.pad(a, [(0, 0)] * 2 + [(0, pad)] +
                                             [(0, 0)] * (a.ndim - 3)), cache)
      ok = jnp.pad(ok, ((0, 0), (0, pad)))
    return cache, ok, jnp.sum(ok, axis=-1, dtype=jnp.int32), last

  def cached_step(carry, c):
    buf, cache, seen_BxS, count_B, start, logits_BxV = carry
    token_B = pick(logits_BxV, c)
    buf = jax.lax.dynamic_update_slice_in_dim(buf, token_B[:, None], c, 1)

    def shift(_):
      new_start = c + 1 - keep
      return (*prefill(buf, new_start, c + 1, keep), new_start)

    def append(_):
      slot = c - start
      seen = seen_BxS | (jnp.arange(context) == slot)[None, :]
      logits, new_cache = decoder.step(cache, token_B, count_B, slot, seen)
      return new_cache, seen, count_B + 1, logits, start

    cache, seen_BxS, count_B, logits_BxV, start = jax.lax.cond(
        c + 1 - start > context, shift, append, None)
    return (buf, cache, seen_BxS, count_B, start, logits_BxV), None

  cache, seen, count, logits = prefill(buf, jnp.int32(0), p, context)
  carry = (buf, cache, seen, count, jnp.int32(0), logits)
  carry, _ = jax.lax.scan(cached_step, carry,
                          jnp.arange(p, p + max_new_tokens, dtype=jnp.int32))
  return carry[0][:rows, :p + max_new_tokens]


def pad_prompts(prompts, pad_id: int = 0):
  """Left-pads token sequences of different lengths: ``(int32[B, P], bool[B, P])``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  prompts = [np.asarray(p, np.int32).reshape(-1) for p in prompts]
  if not prompts or min(len(p) for p in prompts) < 1:
    raise ValueError("every prompt must hold at least one token")
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  mask = np.zeros((len(prompts), width), bool)
  for i, p in enumerate(prompts):
    tokens[i, width - len(p):], mask[i, width - len(p):] = p, True
  return tokens, mask
