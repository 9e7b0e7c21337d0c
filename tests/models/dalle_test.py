"""DALL-E's transformer: causal over the joint sequence, masked vocabulary, cached
sampling equal to naive, the frozen tokenizer, the loss weights."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from genjax import models
from genjax.data import run_data
from genjax import train
from compile_counter import count_compiles  # tests/compile_counter.py

dalle = models.get("dalle")
TOKENIZER = dict(name="dvae", input_shape=(8, 8, 1), codebook_size=8, code_dim=4,
                 channels=(8, 8))


def _config(**kw):
  return ml_collections.ConfigDict(dict(name="dalle", tokenizer=TOKENIZER, slots=3,
                                        num_layers=2, num_heads=2, width=16,
                                        clip_width=8, **kw))


@pytest.fixture(scope="module")
def model():
  return dalle.build(_config(caption_dropout=0.1), jax.random.key(0))


def _tokens(m, n=2, seed=0):
  rng = np.random.default_rng(seed)
  text = rng.integers(0, dalle.TEXT_VOCAB, (n, m.text_length))
  text[:, 0] = dalle.BOS
  image = rng.integers(0, m.codebook_size, (n, m.num_image_tokens)) + dalle.TEXT_VOCAB
  return jnp.asarray(np.concatenate([text, image], 1), jnp.int32)


def test_sequence_layout(model):
  assert model.grid == (2, 2) and model.num_image_tokens == 12
  assert model.text_length == 1 + 19 and model.block_size == 32
  assert model.image_shape == (8, 24, 1)


def test_causal_over_the_joint_sequence_and_vocabulary_masked_by_position(model):
  tokens = _tokens(model)[:, :-1]
  logits = np.asarray(model(tokens))
  for j in range(tokens.shape[1]):
    t = tokens[:, j]
    swapped = jnp.where(t < dalle.TEXT_VOCAB, (t + 1) % dalle.TEXT_VOCAB,
                        dalle.TEXT_VOCAB + (t - dalle.TEXT_VOCAB + 1) % model.codebook_size)
    changed = tokens.at[:, j].set(swapped)
    other = np.asarray(model(changed))
    np.testing.assert_array_equal(other[:, :j], logits[:, :j])  # no look at the future
  text_ids = np.arange(logits.shape[-1]) < dalle.TEXT_VOCAB
  predicts_text = np.arange(1, tokens.shape[1] + 1) < model.text_length
  assert np.all(logits[:, predicts_text][..., ~text_ids] <= -1e8)
  assert np.all(logits[:, ~predicts_text][..., text_ids] <= -1e8)
  assert np.all(logits[:, ~predicts_text][..., ~text_ids] > -1e8)


def test_cached_and_naive_image_sampling_agree_and_decode_to_strips(model):
  captions = dalle.caption_tokens(model, ["three one four", "a handwritten two"])
  kw = dict(captions=captions, temperature=0.9, top_k=5)
  cached = np.asarray(dalle.sample_tokens(model, jax.random.key(1), 2, method="cached", **kw))
  naive = np.asarray(dalle.sample_tokens(model, jax.random.key(1), 2, method="naive", **kw))
  np.testing.assert_array_equal(cached, naive)
  np.testing.assert_array_equal(cached[:, :model.text_length], captions)
  image = cached[:, model.text_length:]
  assert image.min() >= dalle.TEXT_VOCAB and image.max() < dalle.TEXT_VOCAB + 8
  strips = dalle.decode_image_tokens(model, jnp.asarray(image))
  assert strips.shape == (2, 8, 24, 1) and strips.dtype == jnp.uint8


def test_guided_sampling_draws_from_the_guided_logits(model):
  """Each image token is the Gumbel-max draw of ``l_c + w (l_c - l_u)``, the logits
  given the caption and given the empty caption, recomputed here by full forward
  passes; cached equals naive; w = 0 is the unguided sampler."""
  captions = dalle.caption_tokens(model, ["three one four", "a handwritten two"])
  # w is large because an untrained model barely reads its caption (l_c ~ l_u)
  key, w, temperature = jax.random.key(3), 50.0, 0.8
  kw = dict(captions=captions, temperature=temperature, guidance=w)
  cached = np.asarray(dalle.sample_tokens(model, key, 2, method="cached", **kw))
  naive = np.asarray(dalle.sample_tokens(model, key, 2, method="naive", **kw))
  np.testing.assert_array_equal(cached, naive)
  with count_compiles() as compiled:  # another scale is a traced value: nothing compiles
    dalle.sample_tokens(model, key, 2, method="cached", **dict(kw, guidance=1.5))
  assert not compiled, compiled
  empty = np.asarray(dalle.empty_captions(model, jnp.asarray(cached)))
  assert np.all(empty[:, 1:model.text_length] == 0) and np.all(empty[:, 0] == dalle.BOS)
  lc = np.asarray(model(jnp.asarray(cached[:, :-1])), np.float64)
  lu = np.asarray(model(jnp.asarray(empty[:, :-1])), np.float64)
  for c in range(model.text_length, cached.shape[1]):
    guided = lc[:, c - 1] + w * (lc[:, c - 1] - lu[:, c - 1])
    gumbel = np.asarray(jax.random.gumbel(jax.random.fold_in(key, c), guided.shape))
    np.testing.assert_array_equal(cached[:, c], np.argmax(guided / temperature + gumbel, -1))
  plain = np.asarray(dalle.sample_tokens(model, key, 2, captions=captions,
                                         temperature=temperature))
  zero = np.asarray(dalle.sample_tokens(model, key, 2, captions=captions,
                                        temperature=temperature, guidance=0.0))
  np.testing.assert_array_equal(zero, plain)
  assert not np.array_equal(cached, plain)  # guidance changes the draws
  unguidable = nnx.clone(model)
  unguidable.caption_dropout = 0.0  # as if trained without the empty caption
  with pytest.raises(ValueError, match="caption_dropout"):
    dalle.sample_tokens(unguidable, key, 2, captions=captions, guidance=1.0)
  with pytest.raises(ValueError, match="needs captions"):
    dalle.sample_tokens(model, key, 2, guidance=1.0)


def test_caption_dropout_trains_on_the_empty_caption_without_its_text_loss(model):
  """With every caption dropped, the training loss is 7/8 of the image loss given
  the empty caption; without a key (evaluation) nothing is dropped."""
  batch = {"tokens": _tokens(model, 3)}
  dropped = nnx.clone(model)
  dropped.caption_dropout = 1.0 - 1e-7  # the same weights; every caption dropped
  train_loss, _ = dalle._transformer_loss(dropped, batch, jax.random.key(0))  # pylint: disable=protected-access
  empty = {"tokens": dalle.empty_captions(model, batch["tokens"])}
  _, on_empty = dalle.loss(model, empty)
  np.testing.assert_allclose(float(train_loss), 7 / 8 * float(on_empty["image_nll"]),
                             rtol=1e-5)
  _, plain = dalle.loss(model, batch)
  _, no_key = dalle.loss(dropped, batch)
  np.testing.assert_allclose(float(no_key["loss"]), float(plain["loss"]), rtol=1e-6)


def test_loss_weighs_caption_one_eighth_and_image_seven_eighths(model):
  w = np.asarray(dalle._weights(model, model.block_size - 1))  # pylint: disable=protected-access
  n_text = model.text_length - 1
  np.testing.assert_allclose(w[:n_text].sum(), 1 / 8, rtol=1e-6)
  np.testing.assert_allclose(w[n_text:].sum(), 7 / 8, rtol=1e-6)
  batch = {"tokens": _tokens(model, 3)}
  loss, metrics = dalle.loss(model, batch)
  np.testing.assert_allclose(
      float(loss), float(metrics["text_nll"]) / 8 + 7 * float(metrics["image_nll"]) / 8,
      rtol=1e-5)
  ll = dalle.log_likelihood(model, batch)
  np.testing.assert_allclose(-np.asarray(ll).mean() / 12, float(metrics["image_nll"]),
                             rtol=1e-5)


def test_hard_negative_captions_add_terms_to_the_scorers_image_side(model):
  rng = np.random.default_rng(1)
  captions = jnp.asarray(rng.integers(1, dalle.TEXT_VOCAB - 1, (4, model.caption_length)))
  negatives = jnp.asarray(rng.integers(1, dalle.TEXT_VOCAB - 1, (4, model.caption_length)))
  images = jnp.asarray(rng.integers(0, 256, (4, *model.image_shape)), jnp.uint8)
  plain, _ = model.clip.loss(captions, images)
  hard, accuracy = model.clip.loss(captions, images, negatives)
  t, i = (np.asarray(v, np.float64) for v in model.clip.embed(captions, images))
  n = np.asarray(model.clip.embed_text(negatives), np.float64)
  scale = np.exp(float(model.clip.log_scale[...]))
  xent = lambda z: np.mean(np.log(np.exp(z).sum(1)) - np.diag(z))
  want = 0.5 * (xent(scale * t @ i.T) + xent(scale * np.concatenate([i @ t.T, i @ n.T], 1)))
  np.testing.assert_allclose(float(hard), want, rtol=1e-5)
  assert float(hard) > float(plain)
  picks = np.argmax(np.concatenate([i @ t.T, i @ n.T], 1), 1)
  assert float(accuracy) == np.mean(picks == np.arange(4))


def test_generate_keeps_the_candidate_its_scorer_ranks_first(model):
  key, texts = jax.random.key(3), ["seven", "one two"]
  tokens, strips = dalle.draw_candidates(model, key, texts, 3)
  assert strips.shape == (2, 3, *model.image_shape) and tokens.shape == (6, model.text_length)
  np.testing.assert_array_equal(tokens[3], dalle.caption_tokens(model, ["one two"])[0])
  brightness = lambda _, images: images.reshape(len(images), -1).mean(-1)
  best, scores = dalle.generate(model, key, texts, candidates=3, scorer=brightness)
  want = np.argmax(strips.reshape(2, 3, -1).mean(-1), -1)
  np.testing.assert_array_equal(best, strips[np.arange(2), want])
  assert scores.shape == (2, 3)
  with pytest.raises(ValueError, match="candidates must be >= 1"):
    dalle.generate(model, key, texts, candidates=0)


def test_a_step_trains_the_transformer_and_scorer_but_not_the_tokenizer():
  opt = ml_collections.ConfigDict(dict(name="adamw", learning_rate=1e-2, schedule="constant",
                                       warmup_steps=0, weight_decay=0.1, grad_clip_norm=1.0))
  ts = train.create_train_state(dalle, _config(), opt, 10, jax.random.key(0))
  before = jax.device_get(nnx.state(ts.model))
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(dalle, graphdef)
  m = ts.model
  batch = {"tokens": np.asarray(_tokens(m, 4)),
           "image": np.random.default_rng(0).integers(0, 256, (4, *m.image_shape), np.uint8)}
  state, metrics = step(state, batch, jax.random.key(1))
  after = nnx.state(nnx.merge(graphdef, state).model)
  assert float(metrics["clip_loss"]) > 0 and np.isfinite(float(metrics["loss"]))
  for part, changes in (("tokenizer", False), ("stack", True), ("clip", True)):
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[part]),
                                                      jax.tree.leaves(after[part]))]
    assert any(moved) == changes, part


def test_missing_or_unfitting_tokenizer_runs_get_clear_errors(tmp_path, data_dir):
  from experiments.configs import dalle as dalle_config  # pylint: disable=g-import-not-at-top
  from genjax import rundir  # pylint: disable=g-import-not-at-top
  config = dalle_config.get_config("smoke")
  config.data.data_dir = str(data_dir)
  config.model.tokenizer_workdir = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope/config.json does not exist"):
    rundir.prepare_config(config)
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text('{"model": {"name": "dvae", "input_shape": [28, 28, 1]}}')
  config.model.tokenizer_workdir = str(other)
  with pytest.raises(ValueError, match=r"is for \(28, 28, 1\) images"):
    rundir.prepare_config(config)
  # Not trained yet: the config validates from its image_tokenizer block, and
  # reading tokens says that the tokenizer must be trained first.
  config.model.tokenizer_workdir = ""
  prepared = rundir.prepare_config(config)
  assert prepared.model.tokenizer.name == "dvae"
  data = run_data.for_config(prepared)
  assert data.synthetic_batch(2)["tokens"].shape[0] == 2
  with pytest.raises(ValueError, match="not trained yet"):
    next(data.train_iterator(2, 0))
