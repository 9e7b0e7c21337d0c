"""Text corpora: documents, whole-document splits, tokenizers, token windows."""

import numpy as np
import ml_collections
import pytest

from genjax.data import run_data
from genjax.data import text
from genjax.data import tokenizers


def _write_corpus(directory, docs):
  directory.mkdir(parents=True, exist_ok=True)
  for name, body in docs.items():
    (directory / f"{name}.txt").write_text(body, encoding="utf-8")
  return directory


DOCS = {f"play_{i}": f"ACT {i}. Scene one.\nEnter the players, {i} of them: ¡olé!\n" * 30
        for i in range(6)}


def _config(directory, data_dir, **kw):
  c = ml_collections.ConfigDict(dict(name="text", text_dir=str(directory),
                                     holdout=("play_1", "play_4"), holdout_every=0,
                                     tokenizer="char", vocab_size=0,
                                     data_dir=str(data_dir)))
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  return _write_corpus(tmp_path_factory.mktemp("corpus"), DOCS)


def test_missing_empty_and_non_utf8_directories_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist.*text_dir"):
    text.read_corpus(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.md").write_text("not a .txt file")
  with pytest.raises(FileNotFoundError, match="holds no .txt file"):
    text.read_corpus(tmp_path / "empty")
  bad = _write_corpus(tmp_path / "bad", {"good": "fine"})
  (bad / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  with pytest.raises(ValueError, match=r"latin1\.txt is not UTF-8 text \(byte 3"):
    text.read_corpus(bad)


def test_text_dir_falls_back_to_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv(text.TEXT_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="GENJAX_TEXT_DIR"):
    text.text_dir(ml_collections.ConfigDict(dict(text_dir="")))
  monkeypatch.setenv(text.TEXT_DIR_ENV, str(tmp_path))
  assert text.text_dir(ml_collections.ConfigDict(dict(text_dir=""))) == tmp_path


def test_split_rules_hold_out_whole_documents():
  names = [f"d{i}" for i in range(7)]
  assert text.split_documents(names, ("d2", "d5")) == {
      "train": ["d0", "d1", "d3", "d4", "d6"], "test": ["d2", "d5"]}
  assert text.split_documents(names, holdout_every=3)["test"] == ["d2", "d5"]
  with pytest.raises(ValueError, match=r"'d9' \(closest: d"):
    text.split_documents(names, ("d9",))
  with pytest.raises(ValueError, match="set config.data.holdout"):
    text.split_documents(names)
  with pytest.raises(ValueError, match="no training"):
    text.split_documents(["a"], ("a",))


def test_prepared_splits_read_back_and_share_no_document(corpus_dir, data_dir):
  corpus = text.prepare(_config(corpus_dir, data_dir))
  train, test = text.texts(corpus, "train"), text.texts(corpus, "test")
  assert sorted(test) == ["play_1", "play_4"]
  assert not set(train) & set(test)
  assert set(train) | set(test) == set(DOCS)
  assert all(train[n] == DOCS[n] for n in train)  # exact text, unicode included
  assert not {t for t in test.values()} & {t for t in train.values()}
  again = text.prepare(_config(corpus_dir, data_dir))
  assert again == corpus  # prepared once, found again
  other = text.prepare(_config(corpus_dir, data_dir, holdout=("play_0",)))
  assert other.config_name != corpus.config_name  # another split, another dataset


def test_char_tokenizer_round_trips_and_maps_unknown_characters():
  tok = tokenizers.train("char", ["hello world", "ü!"])
  assert tok.vocab_size == len(set("hello worldü!")) + 1
  ids = tok.encode("hello ü!")
  assert ids.dtype == np.int32 and tok.decode(ids) == "hello ü!"
  assert tok.encode("hez")[2] == 0 and tok.decode(tok.encode("hez")) == "he\ufffd"


def test_bpe_tokenizer_round_trips_exactly_and_has_the_configured_size(tmp_path):
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefghijklmnop"), rng.integers(2, 7)))
           for _ in range(400)]
  texts = [" ".join(rng.choice(words, 300)) for _ in range(5)]
  tok = tokenizers.train("bpe", texts, vocab_size=300)
  assert tok.vocab_size == 300
  sample = "Enter the players, 3 of them: ¡olé! 日本語 \t\n  spaces"
  assert tok.decode(tok.encode(sample)) == sample
  assert len(tok.encode(texts[0])) < 0.8 * len(texts[0])  # merges compress
  path = tokenizers.save(tok, tmp_path / "tokenizer.json")
  loaded = tokenizers.load(path)
  np.testing.assert_array_equal(loaded.encode(texts[1]), tok.encode(texts[1]))
  with pytest.raises(ValueError, match="more than the 256 byte tokens"):
    tokenizers.train("bpe", texts, vocab_size=200)
  (tmp_path / "junk.json").write_text("{}")
  with pytest.raises(ValueError, match="not a genjax tokenizer"):
    tokenizers.load(tmp_path / "junk.json")


def test_train_windows_are_stream_slices_and_resume_exactly():
  stream = np.arange(1000, dtype=np.int32)
  it = text.train_iterator(stream, batch_size=4, block_size=15, seed=3)
  batches = [next(it) for _ in range(3)]
  tokens = batches[0]["tokens"]
  assert tokens.shape == (4, 16) and tokens.dtype == np.int32
  assert np.all(np.diff(tokens, axis=1) == 1)  # contiguous windows of the stream
  state = it.get_state()
  following = [next(it)["tokens"] for _ in range(2)]
  resumed = text.train_iterator(stream, batch_size=4, block_size=15, seed=3)
  resumed.set_state(state)
  for expected in following:
    np.testing.assert_array_equal(next(resumed)["tokens"], expected)
  fresh = text.train_iterator(stream, batch_size=4, block_size=15, seed=3)
  np.testing.assert_array_equal(next(fresh)["tokens"], tokens)
  other = text.train_iterator(stream, batch_size=4, block_size=15, seed=4)
  assert not np.array_equal(next(other)["tokens"], tokens)
  starts = np.concatenate([next(fresh)["tokens"][:, 0] for _ in range(200)])
  assert starts.min() >= 0 and starts.max() <= 1000 - 16
  assert len(np.unique(starts)) > 500  # fresh draws cover the stream


def test_hosts_serve_disjoint_rows_of_the_same_global_batches():
  stream = np.arange(1000, dtype=np.int32)
  one = text.train_iterator(stream, batch_size=6, block_size=15, seed=3, shard_index=0,
                            shard_count=1)
  hosts = [text.train_iterator(stream, batch_size=3, block_size=15, seed=3,
                               shard_index=k, shard_count=2) for k in range(2)]
  for _ in range(2):
    np.testing.assert_array_equal(np.concatenate([next(h)["tokens"] for h in hosts]),
                                  next(one)["tokens"])


def test_eval_windows_predict_every_token_exactly_once():
  tok = tokenizers.CharTokenizer("abcdefghij")
  stream = np.asarray(np.random.default_rng(0).integers(1, 11, 103), np.int32)
  batches = text.eval_batches(stream, 103, tok, batch_size=4, block_size=10)
  assert batches.num_tokens == 102 and batches.num_chars == 102
  predicted = []
  for b in batches:
    assert b["tokens"].shape == (4, 11) and b["mask"].shape == (4, 11)
    for row, mask in zip(b["tokens"], b["mask"]):
      predicted += list(row[1:][mask[1:]])
      assert mask[0] or not mask.any()  # padding only after real tokens
  np.testing.assert_array_equal(predicted, stream[1:])
  # two hosts: disjoint windows, the same number of equally shaped batches
  shards = [list(text.eval_batches(stream, 103, tok, batch_size=2, block_size=10,
                                   shard_index=i, shard_count=2)) for i in range(2)]
  assert len(shards[0]) == len(shards[1])
  total = sum(int(b["mask"][:, 1:].sum()) for s in shards for b in s)
  assert total == 102


def test_run_data_fills_the_vocabulary_and_keeps_the_run_tokenizer(corpus_dir, data_dir,
                                                                     tmp_path):
  config = ml_collections.ConfigDict(dict(data=_config(corpus_dir, data_dir),
                                          model=dict(name="gpt", block_size=8)))
  data = run_data.for_config(config)
  assert data.kind == "text"
  assert data.model_fields() == {"vocab_size": data.tokenizer.vocab_size}
  batch = next(data.train_iterator(batch_size=3, seed=0))
  assert batch["tokens"].shape == (3, 9)
  data.save(tmp_path)
  assert run_data.load_tokenizer(tmp_path).to_json() == data.tokenizer.to_json()
  # a run decodes with its own copy even if the corpus's tokenizer changes
  tokenizers.save(tokenizers.CharTokenizer("xyz"), tmp_path / run_data.TOKENIZER_FILE)
  assert run_data.for_config(config, tmp_path).tokenizer.chars == "xyz"
  with pytest.raises(KeyError, match="known datasets: digits, mnist, text, counting"):
    run_data.kind("shakespeare")


def test_counting_corpus_is_deterministic_and_spelled_out():
  assert text.number_words(342) == "three hundred and forty-two"
  assert text.number_words(1000) == "one thousand"
  assert text.number_words(2017) == "two thousand seventeen"
  docs = text.counting_corpus()
  assert docs == text.counting_corpus() and len(docs) == 40
  assert docs["count_00"].startswith("one\ntwo\nthree\n")
