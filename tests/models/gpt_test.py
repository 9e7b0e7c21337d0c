"""GPT: causality, the KV cache, cached against naive sampling, the protocol, training."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from genjax import models
from genjax import train
from genjax.models import decoding
from compile_counter import count_compiles  # tests/compile_counter.py

gpt = models.get("gpt")
V, BLOCK = 11, 8


def _model(positions="learned", dtype="float32", seed=0, **kw):
  cfg = dict(name="gpt", vocab_size=V, block_size=BLOCK, num_layers=2, num_heads=2,
             width=16, positions=positions, dtype=dtype, **kw)
  return gpt.build(cfg, jax.random.key(seed))


@pytest.fixture(scope="module", params=["learned", "rotary"])
def model(request):
  return _model(request.param)


def _tokens(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(0, V, shape), jnp.int32)


def test_causal_exactly_and_every_position_sees_its_own_token(model):
  tokens = _tokens((2, BLOCK))
  logits = np.asarray(gpt.conditionals(model, tokens))
  assert logits.shape == (2, BLOCK, V)
  for j in range(BLOCK):
    changed = tokens.at[:, j].set((tokens[:, j] + 1) % V)
    other = np.asarray(gpt.conditionals(model, changed))
    np.testing.assert_array_equal(other[:, :j], logits[:, :j])  # exactly, no tolerance
    assert np.abs(other[:, j] - logits[:, j]).max() > 1e-6, j


def test_gradient_causality():
  """d logits[t] / d embedding[s] is zero for s > t and not for s <= t."""
  m = _model()
  tokens = _tokens((1, BLOCK))
  graphdef, state = nnx.split(m)

  def logits_from_embeddings(x_TxD):
    mm = nnx.merge(graphdef, state)
    pos = jnp.arange(BLOCK)[None]
    x = x_TxD[None] + mm.pos_embed(pos)
    return mm.logits(mm.stack(x, pos))[0].sum(-1)

  x0 = m.embed(tokens)[0]
  jac = np.asarray(jax.jit(jax.jacrev(logits_from_embeddings))(x0))  # [T, T, D]
  norms = np.abs(jac).sum(-1)
  assert np.all(norms[np.triu_indices(BLOCK, 1)] == 0)
  assert np.all(norms[np.tril_indices(BLOCK)] > 0)


def _decode_all(m, tokens, prefix):
  """Prefill ``prefix`` tokens, then feed the rest one at a time through the cache;
  returns the logits of every position from the prefill and the steps."""
  dec = m.decoder()
  b = tokens.shape[0]
  valid = jnp.arange(BLOCK)[None, :] < prefix
  logits, cache = dec.prefill(jnp.where(valid, tokens, 0), jnp.broadcast_to(valid, (b, BLOCK)))
  out = [logits[:, :prefix]]
  seen = jnp.broadcast_to(valid, (b, BLOCK))
  for t in range(prefix, BLOCK):
    seen = seen | (jnp.arange(BLOCK) == t)[None]
    step_logits, cache = dec.step(cache, tokens[:, t], jnp.full((b,), t), t, seen)
    out.append(step_logits[:, None])
  return jnp.concatenate(out, axis=1)


def test_cached_decoder_logits_equal_full_forward(model):
  tokens = _tokens((3, BLOCK), seed=4)
  full = gpt.conditionals(model, tokens)
  graphdef, state = nnx.split(model)
  cached = jax.jit(lambda s, t: _decode_all(nnx.merge(graphdef, s), t, 3))(state, tokens)
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full), atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_a_row():
  """A left-padded prompt gives the logits of the same prompt unpadded."""
  m = _model()
  dec = m.decoder()
  prompt = _tokens((1, 5), seed=6)
  padded = jnp.concatenate([jnp.full((1, 3), 7, jnp.int32), prompt], axis=1)
  valid = jnp.arange(BLOCK)[None] >= 3
  a = dec.forward(padded, valid)[:, 3:]
  b = dec.forward(jnp.pad(prompt, ((0, 0), (0, 3))), jnp.arange(BLOCK)[None] < 5)[:, :5]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_cached_and_naive_sampling_give_the_same_tokens(model):
  """Different prompt lengths (left padding), more new tokens than the context (the
  window shifts twice), with and without temperature, top-k, top-p and greedy."""
  prompt, mask = decoding.pad_prompts([[1, 2, 3], [4], [5, 6, 7, 8, 9]])
  kw = dict(prompt=prompt, prompt_mask=mask, max_new_tokens=2 * BLOCK)
  for i, filters in enumerate([dict(), dict(top_k=3, temperature=0.8), dict(top_p=0.7),
                               dict(temperature=0.0)]):
    cached = np.asarray(gpt.sample(model, jax.random.key(i), 3, method="cached", **kw,
                                   **filters))
    naive = np.asarray(gpt.sample(model, jax.random.key(i), 3, method="naive", **kw,
                                  **filters))
    assert cached.shape == (3, 5 + 2 * BLOCK) and cached.dtype == np.int32
    np.testing.assert_array_equal(cached, naive, err_msg=str(filters))
    np.testing.assert_array_equal(cached[:, :5], prompt)
    assert cached.min() >= 0 and cached.max() < V


def test_samples_depend_on_the_key_and_filters_restrict_them():
  m = _model()
  kw = dict(prompt=jnp.array([1, 2]), max_new_tokens=12)
  a = np.asarray(gpt.sample(m, jax.random.key(0), 4, **kw))
  b = np.asarray(gpt.sample(m, jax.random.key(1), 4, **kw))
  assert not np.array_equal(a, b)
  greedy = [np.asarray(gpt.sample(m, jax.random.key(k), 4, temperature=0.0, **kw))
            for k in (0, 1)]
  np.testing.assert_array_equal(greedy[0], greedy[1])  # greedy ignores the key
  top1 = np.asarray(gpt.sample(m, jax.random.key(5), 4, top_k=1, **kw))
  np.testing.assert_array_equal(top1, greedy[0])
  with count_compiles() as compiled:  # temperature and filters are traced
    gpt.sample(m, jax.random.key(5), 4, top_k=3, top_p=0.5, temperature=0.7, **kw)
  assert not compiled


def test_filter_logits_on_a_hand_example():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda x: np.isfinite(np.asarray(x))[0].tolist()
  assert kept(decoding.filter_logits(logits, top_k=2)) == [True, True, False, False]
  assert kept(decoding.filter_logits(logits, top_p=0.5)) == [True, False, False, False]
  assert kept(decoding.filter_logits(logits, top_p=0.79)) == [True, True, False, False]
  assert kept(decoding.filter_logits(logits, top_p=0.81)) == [True, True, True, False]
  assert kept(decoding.filter_logits(logits, top_p=1.0)) == [True] * 4


def test_public_functions_compile_once():
  m = _model()
  batch = {"tokens": _tokens((2, BLOCK + 1))}
  calls = [lambda: gpt.loss(m, batch, jax.random.key(0)),
           lambda: gpt.log_likelihood(m, batch, jax.random.key(0)),
           lambda: gpt.conditionals(m, batch["tokens"][:, :BLOCK]),
           lambda: gpt.sample(m, jax.random.key(0), 2, max_new_tokens=4),
           lambda: gpt.sample(m, jax.random.key(1), 2, prompt=jnp.array([1, 2]),
                              max_new_tokens=4, method="naive", temperature=0.5)]
  for call in calls:
    jax.block_until_ready(call())
  with count_compiles() as compiled:
    for call in calls:
      jax.block_until_ready(call())
  assert len(compiled) == 0, compiled


def test_loss_is_mean_of_log_likelihood_and_mask_drops_padding():
  m = _model()
  tokens = _tokens((3, BLOCK + 1), seed=2)
  ll = np.asarray(gpt.log_likelihood(m, {"tokens": tokens}))
  loss, metrics = gpt.loss(m, {"tokens": tokens})
  np.testing.assert_allclose(float(loss), -ll.mean() / BLOCK, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["bits_per_token"]), float(loss) / np.log(2),
                             rtol=1e-6)
  # right padding: a mask over the last 4 tokens gives the log-likelihood of the prefix
  mask = np.ones((3, BLOCK + 1), bool)
  mask[:, -4:] = False
  masked = np.asarray(gpt.log_likelihood(m, {"tokens": tokens, "mask": mask}))
  prefix = np.asarray(gpt.log_likelihood(m, {"tokens": tokens[:, :-4]}))
  np.testing.assert_allclose(masked, prefix, rtol=1e-5)
  assert np.all(ll < 0)


def test_bad_batches_and_configs_get_clear_errors():
  m = _model()
  with pytest.raises(ValueError, match="block_size is 8"):
    gpt.log_likelihood(m, {"tokens": _tokens((2, BLOCK + 2))})
  with pytest.raises(TypeError, match="'tokens'"):
    gpt.loss(m, {"image": np.zeros((2, 8, 8, 1), np.uint8)})
  with pytest.raises(ValueError, match="divisible by config.model.num_heads"):
    gpt.build(dict(name="gpt", vocab_size=5, width=10, num_heads=4), jax.random.key(0))
  with pytest.raises(ValueError, match="positions must be one of"):
    gpt.build(dict(name="gpt", vocab_size=5, positions="alibi"), jax.random.key(0))
  with pytest.raises(ValueError, match="fills it from the tokenizer"):
    gpt.build(dict(name="gpt"), jax.random.key(0))
  with pytest.raises(ValueError, match="method must be one of"):
    gpt.sample(m, jax.random.key(0), 1, method="beam")


def test_weight_decay_mask_covers_matrices_only():
  m = _model()
  mask = gpt.decay_mask(nnx.state(m, nnx.Param))
  flat = {"/".join(str(getattr(k, "key", k)) for k in path[:-1]): v
          for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert flat["embed/embedding"] and flat["stack/blocks/qkv/kernel"]
  assert flat["stack/blocks/fc_proj/kernel"]
  assert not flat["pos_embed/embedding"] and not flat["stack/blocks/qkv/bias"]
  assert not flat["stack/blocks/ln1/scale"] and not flat["ln_f/bias"]


def test_gpt2_initialisation_scales_residual_projections():
  big = gpt.build(dict(name="gpt", vocab_size=V, width=64, num_layers=8, num_heads=2),
                  jax.random.key(0))
  proj = np.asarray(big.stack.blocks.proj.kernel[...])  # [8, 64, 64]
  fc = np.asarray(big.stack.blocks.fc.kernel[...])
  np.testing.assert_allclose(fc.std(), 0.02, rtol=0.05)
  np.testing.assert_allclose(proj.std(), 0.02 / np.sqrt(16), rtol=0.05)


def _optimizer_config(**kw):
  c = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-2, schedule="constant",
                                     warmup_steps=0, grad_clip_norm=1.0, weight_decay=0.1,
                                     b1=0.9, b2=0.99, eps=1e-8))
  c.update(kw)
  return c


def _model_config(**kw):
  return ml_collections.ConfigDict(dict(name="gpt", vocab_size=V, block_size=BLOCK,
                                        num_layers=2, num_heads=2, width=16, **kw))


def test_tiny_model_overfits_a_tiny_corpus():
  corpus = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3, np.int32)
  batch = {"tokens": np.stack([corpus[i:i + BLOCK + 1] for i in range(8)])}
  ts = train.create_train_state(gpt, _model_config(), _optimizer_config(), 200,
                                jax.random.key(0))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(gpt, graphdef)
  for _ in range(150):
    state, metrics = step(state, batch, jax.random.key(1))
  assert float(metrics["loss"]) < 0.05, float(metrics["loss"])


def test_sharded_step_equals_single_device_step():
  batch = {"tokens": np.asarray(_tokens((8, BLOCK + 1), seed=9))}
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    mesh = train.make_mesh(devices)
    ts = train.create_train_state(gpt, _model_config(dropout=0.1), _optimizer_config(), 10,
                                  jax.random.key(0))
    graphdef, state = nnx.split(ts)
    step = train.compile_train_step(gpt, graphdef, mesh)
    state = train.replicate(state, mesh)
    for _ in range(2):
      state, metrics = step(state, train.shard_batch(batch, mesh), jax.random.key(1))
    results.append((jax.device_get(state), float(metrics["loss"])))
  (a, la), (b, lb) = results
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  # (Adam divides by the gradients' scale: a summation order that differs between
  # one and four devices moves a near-zero gradient's update by up to ~1e-4 x lr)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-4, rtol=1e-4)


def test_bfloat16_compute_keeps_float32_parameters_and_loss():
  m32, m16 = _model(), _model(dtype="bfloat16")
  params = jax.tree.leaves(nnx.state(m16, nnx.Param))
  assert all(p.dtype == jnp.float32 for p in params)
  tokens = _tokens((2, BLOCK + 1), seed=3)
  loss16, _ = gpt.loss(m16, {"tokens": tokens})
  loss32, _ = gpt.loss(m32, {"tokens": tokens})
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(float(loss16), float(loss32), rtol=2e-2)
  assert gpt.conditionals(m16, tokens[:, :BLOCK]).dtype == jnp.float32
