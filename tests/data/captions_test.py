"""Captioned digit strips: captions match digits, held-out pairs never train, determinism."""

import numpy as np
import pytest

from genjax.data import captions


@pytest.fixture(scope="module")
def train(data_dir):
  ds = captions.batches("digits", "train", batch_size=50, seed=3, data_dir=data_dir,
                        prefetch=0)
  return [next(ds) for _ in range(8)]


def test_every_caption_names_its_digits(train):
  texts = []
  for batch in train:
    for ids, digits in zip(batch["caption"], batch["digits"]):
      text = captions.decode_caption(ids)
      want = [int(d) for d in digits if d >= 0]
      assert captions.read_digits(want, text) == want, (text, want)
      texts.append(text)
  for phrase in ("a handwritten ", "the digit ", "the number ", "the digits "):
    assert any(t.startswith(phrase) for t in texts), phrase  # several phrasings occur
  assert {int((b["digits"] >= 0).sum(1).max()) for b in train} == {3}


def test_strips_hold_their_digit_images_left_aligned(train, data_dir):
  from genjax.data import pipeline  # pylint: disable=g-import-not-at-top
  images = pipeline.load_arrays("digits", "train", data_dir=data_dir)
  b = train[0]
  for strip, idx, digits in zip(b["image"], b["index"], b["digits"]):
    assert strip.shape == (8, 24, 1)
    for slot in range(3):
      crop = strip[:, slot * 8:(slot + 1) * 8]
      if digits[slot] < 0:
        assert idx[slot] == -1 and not crop.any()  # blank slot
      else:
        np.testing.assert_array_equal(crop, images["image"][idx[slot]])
        assert images["label"][idx[slot]] == digits[slot]


def test_held_out_pairs_never_appear_in_training_and_make_the_heldout_split(train, data_dir):
  pairs = {(8, 3)}
  for batch in train:
    for digits in batch["digits"]:
      assert not captions.contains_pair([int(d) for d in digits if d >= 0], pairs)
  held = captions.batches("digits", "heldout", batch_size=10, seed=3, size=30,
                          data_dir=data_dir)
  assert len(held) == 3
  for batch in held:
    for digits in batch["digits"]:
      assert captions.contains_pair([int(d) for d in digits if d >= 0], pairs)


def test_examples_are_a_function_of_the_seed_and_index(data_dir):
  a = captions.batches("digits", "test", batch_size=5, seed=1, size=10, data_dir=data_dir)
  b = captions.batches("digits", "test", batch_size=5, seed=1, size=10, data_dir=data_dir)
  c = captions.batches("digits", "test", batch_size=5, seed=2, size=10, data_dir=data_dir)
  np.testing.assert_array_equal(a[1]["image"], b[1]["image"])
  assert not np.array_equal(a[1]["image"], c[1]["image"])


def test_caption_encoding_round_trips_and_rejects_other_characters():
  length = captions.max_caption_length()
  assert length == len("a handwritten seven")
  ids = captions.encode_caption("Two Seven")
  assert ids.shape == (length,) and captions.decode_caption(ids) == "two seven"
  with pytest.raises(ValueError, match="characters '!'"):
    captions.encode_caption("two!")
  assert captions.caption([3, 1, 4], 0) == "three one four"
  assert captions.caption([7], 1) == "the digit 7"


def test_negative_captions_are_one_edit_away_and_never_name_a_held_out_pair(train):
  rng = np.random.default_rng(0)
  for digits in ([7], [3, 1, 4], [8, 5], [2, 2, 2], [1, 8, 3]):
    for _ in range(50):
      miss = captions.near_miss(rng, digits, ((8, 3),))
      assert miss != digits and not captions.contains_pair(miss, ((8, 3),))
      assert 1 <= len(miss) <= captions.MAX_DIGITS and abs(len(miss) - len(digits)) <= 1
      if len(miss) == len(digits):  # one digit changed or two neighbours swapped
        diff = [i for i, (a, b) in enumerate(zip(miss, digits)) if a != b]
        assert len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and miss[diff[0]] == digits[diff[1]])
  for batch in train:  # in the batches: the same phrasing, other digits
    for ids, neg, digits in zip(batch["caption"], batch["negative_caption"],
                                batch["digits"]):
      text, other = captions.decode_caption(ids), captions.decode_caption(neg)
      named = captions.read_digits([], other)
      assert named is not None and named != [int(d) for d in digits if d >= 0], other
      assert not captions.contains_pair(named, {(8, 3)})
      want = [int(d) for d in digits if d >= 0]
      assert any(captions.caption(want, k) == text and captions.caption(named, k) == other
                 for k in range(10)), (text, other)  # the phrasing index is shared
