"""FID, KID, precision/recall and the feature classifier.

The distance properties are checked on Gaussian features and, on real MNIST, on
the features of a fixed random-init classifier (the trained one takes minutes to
train; its recipe's accuracy is checked by the opt-in slow test at the end).
"""

import contextlib
import dataclasses
import io
import os

import jax
import numpy as np
import pytest

from genjax import data
from genjax import metrics
from genjax.metrics import classifier


def _gauss(n, d=8, shift=0.0, seed=0):
  return np.random.default_rng(seed).normal(shift, 1.0, (n, d)).astype(np.float32)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
  a, b = _gauss(500), _gauss(400, shift=0.5, seed=1) * 1.5
  assert metrics.fid(a, a) == pytest.approx(0.0, abs=1e-6)
  assert metrics.fid(a, b) == pytest.approx(metrics.fid(b, a), rel=1e-6)
  assert metrics.fid(a, b) > 1.0


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
  # diagonal covariances: FD = |dmu|^2 + sum (sqrt(s_a) - sqrt(s_b))^2
  s_a, s_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
  mu_a, mu_b = np.zeros(3), np.array([1.0, -2.0, 0.0])
  want = 5.0 + np.sum((np.sqrt(s_a) - np.sqrt(s_b)) ** 2)
  got = metrics.frechet_distance(mu_a, np.diag(s_a), mu_b, np.diag(s_b))
  assert got == pytest.approx(want, rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_large_otherwise():
  same = metrics.kid(_gauss(600, seed=0), _gauss(600, seed=1), subset_size=300)
  other = metrics.kid(_gauss(600, seed=0), _gauss(600, shift=1.0, seed=1), subset_size=300)
  assert abs(same) < 0.02 and other > 20 * max(abs(same), 1e-3)


def test_precision_recall():
  real, same = _gauss(400, d=2, seed=0), _gauss(400, d=2, seed=1)
  p, r = metrics.precision_recall(real, same)
  assert p > 0.8 and r > 0.8
  # samples collapsed on one mode: precise but no recall
  p, r = metrics.precision_recall(real, 0.05 * _gauss(400, d=2, seed=2))
  assert p > 0.95 and r < 0.3
  p, r = metrics.precision_recall(real, _gauss(400, d=2, shift=20.0, seed=2))
  assert p == 0.0 and r == 0.0


def test_metric_matrix_products_run_at_full_float32_precision():
  """Not the backend's default passes (TF32 on GPUs, bfloat16 on TPUs)."""
  import re  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from genjax.metrics import distances  # pylint: disable=g-import-not-at-top
  x = jnp.ones((4, 3))
  texts = [distances._poly_mmd2.lower(x, x).as_text(),  # pylint: disable=protected-access
           distances._kth_distances.lower(x, x, 1).as_text()]  # pylint: disable=protected-access
  net = classifier.build(key=jax.random.key(0))
  captured = []
  real = classifier._features_jit  # pylint: disable=protected-access

  def spy(g, s, images):
    captured.append(real.lower(g, s, images).as_text())
    return real(g, s, images)

  classifier._batched(spy, net, np.zeros((2, 28, 28, 1), np.uint8), 2)  # pylint: disable=protected-access
  texts += captured
  for text in texts:
    precisions = set(re.findall(r"precision = \[(\w+), (\w+)\]", text))
    assert precisions == {("HIGHEST", "HIGHEST")}, precisions


def test_images_without_a_feature_network_get_a_clear_error():
  with pytest.raises(ValueError, match="no feature network for images of shape"):
    metrics.fid(np.zeros((4, 8, 8, 1), np.uint8), np.zeros((4, 8, 8, 1), np.uint8))


@pytest.fixture(scope="module")
def mnist_test(data_dir):
  mnist_dir = os.environ.get("GENJAX_MNIST_DIR")
  if not mnist_dir or not os.path.isdir(mnist_dir):
    pytest.skip("GENJAX_MNIST_DIR is unset or not a directory: no real MNIST to test.")
  return data.load_arrays("mnist", "test", data_dir=data_dir, mnist_dir=mnist_dir)


def test_fid_and_kid_on_real_mnist_with_random_features(mnist_test):
  net = classifier.build(key=jax.random.key(7))  # fixed random init, untrained
  images = mnist_test["image"][np.random.default_rng(0).permutation(10_000)[:2000]]
  f = metrics.to_features(images, network=net)
  noise = np.random.default_rng(1).integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8)
  f_noise = metrics.to_features(noise, network=net)
  halves = metrics.fid(f[:1000], f[1000:])
  assert metrics.fid(f, f) == pytest.approx(0.0, abs=1e-6)
  assert metrics.fid(f_noise, f[:1000]) > 20 * halves
  assert abs(metrics.kid(f[:1000], f[1000:])) < 0.05 * metrics.kid(f_noise, f[:1000])
  p, r = metrics.precision_recall(f[:1000], f[1000:])
  assert p > 0.5 and r > 0.5


def test_feature_network_is_trained_once_and_cached(mnist_test, data_dir):
  del mnist_test  # prepared in data_dir
  tiny = dataclasses.replace(classifier.RECIPE, name="tiny_test_recipe",
                             channels=(4, 8, 8), features=8, epochs=0.01, batch_size=32)
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    net = classifier.feature_network((28, 28, 1), data_dir=data_dir, recipe=tiny)
  directory = data.data_dir(data_dir) / "feature_networks" / "tiny_test_recipe"
  assert (directory / "params.npz").is_file()
  if "training the tiny_test_recipe" in stderr.getvalue():  # not by another worker
    assert "test accuracy" in stderr.getvalue()
  loaded, info = classifier.load(directory, tiny)
  x = np.full((3, 28, 28, 1), 128, np.uint8)
  np.testing.assert_allclose(classifier.features(net, x), classifier.features(loaded, x))
  assert info["recipe"]["name"] == "tiny_test_recipe" and 0 <= info["test_accuracy"] <= 1


@pytest.mark.skipif(
    os.environ.get("GENJAX_SLOW_TESTS") != "1",
    reason="slow (trains the MNIST classifier, minutes): set GENJAX_SLOW_TESTS=1")
def test_trained_classifier_reaches_99_percent_and_separates_mnist_from_noise(
    mnist_test, data_dir):
  net = classifier.feature_network((28, 28, 1), data_dir=data_dir)
  assert classifier.accuracy(net, mnist_test["image"], mnist_test["label"]) >= 0.99
  images = mnist_test["image"][np.random.default_rng(0).permutation(10_000)]
  noise = np.random.default_rng(1).integers(0, 256, (5000, 28, 28, 1), dtype=np.uint8)
  halves = metrics.fid(images[:5000], images[5000:], network=net)
  assert halves < 5.0 and metrics.fid(images[:5000], noise, network=net) > 100 * halves
