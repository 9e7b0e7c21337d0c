"""FID, KID and precision/recall between two sets of images or features.

Every function takes two sets, each either uint8 images ``[N, H, W, C]`` (0..255;
mapped to features by the feature network for their shape, see
`genjax.metrics.classifier`) or features ``float[N, F]`` (used as given). Means,
covariances and matrix square roots are computed in float64 numpy; pairwise
distances and kernels in float32 under ``jax.jit``, in blocks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genjax.metrics import classifier

_BLOCK = 1024  # rows of a pairwise-distance block


def to_features(x, *, network=None, data_dir=None, mnist_dir=None,
                batch_size: int = 500) -> np.ndarray:
  """Features ``float[N, F]`` of a set: images go through the feature network.

  Args:
    x: uint8 images ``[N, H, W, C]`` (0..255) or features ``[N, F]``.
    network: a `genjax.metrics.classifier.Classifier`; default the trained
      network for the images' shape (trained and cached on first use).
    data_dir: the cache of the default network (``genjax.data.data_dir``).
    mnist_dir: the MNIST IDX files, should the default network be trained.
    batch_size: images per compiled batch.

  Returns:
    The features as a numpy array.
  """
  x = np.asarray(x)
  if x.ndim == 2:
    return x
  if x.ndim != 4:
    raise ValueError(
        f"expected images [N, H, W, C] or features [N, F]; got shape {x.shape}")
  if x.dtype != np.uint8:
    raise TypeError(f"images must be uint8 0..255 (binarized 0/1 images times 255); "
                    f"got {x.dtype}")
  if network is None:
    network = classifier.feature_network(x.shape[1:], data_dir=data_dir,
                                         mnist_dir=mnist_dir)
  return classifier.features(network, x, batch_size)


def _gaussian(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  f = np.asarray(f, np.float64)
  if f.shape[0] < 2:
    raise ValueError(f"need at least 2 samples for a covariance; got {f.shape[0]}")
  return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
  """``||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``.

  ``tr (C_a C_b)^1/2`` equals the trace of the square root of the symmetric PSD
  matrix ``C_a^1/2 C_b C_a^1/2`` (same eigenvalues), computed with two symmetric
  eigendecompositions in float64, clipping round-off negatives to 0.
  """
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  root_a = _sqrt_psd(cov_a)
  m = root_a @ cov_b @ root_a
  tr_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)))
  value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt
  return float(max(value, 0.0))


def fid(a, b, **kwargs) -> float:
  """The Frechet distance between Gaussians fitted to the features of two sets.

  Args:
    a: images ``uint8[N, H, W, C]`` or features ``[N, F]``.
    b: the same for the other set.
    **kwargs: passed to `to_features` (``network``, ``data_dir``, ``mnist_dir``,
      ``batch_size``).

  Returns:
    FID (0 for identical sets; symmetric). With genjax's MNIST feature network
    the numbers compare genjax models, not Inception FIDs of papers.

  References:
    Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a
    Local Nash Equilibrium", NeurIPS 2017.
  """
  return frechet_distance(*_gaussian(to_features(a, **kwargs)),
                          *_gaussian(to_features(b, **kwargs)))


def _dot(a, b) -> jax.Array:
  """A float32 matrix product at full precision on every backend (the default
  passes are TF32 on GPUs and bfloat16 on TPUs, which would make metrics differ)."""
  return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


@jax.jit
def _poly_mmd2(fa, fb) -> jax.Array:
  """The unbiased MMD^2 with the kernel ``(x.y / d + 1)^3`` of one pair of subsets."""
  d = fa.shape[1]
  k = lambda x, y: (_dot(x, y.T) / d + 1.0) ** 3
  m, n = fa.shape[0], fb.shape[0]
  kaa, kbb, kab = k(fa, fa), k(fb, fb), k(fa, fb)
  return ((jnp.sum(kaa) - jnp.trace(kaa)) / (m * (m - 1))
          + (jnp.sum(kbb) - jnp.trace(kbb)) / (n * (n - 1)) - 2.0 * jnp.mean(kab))


def kid(a, b, *, num_subsets: int = 10, subset_size: int = 1000, seed: int = 0,
        **kwargs) -> float:
  """Kernel Inception Distance: the unbiased polynomial-kernel MMD^2 of the features.

  The mean over ``num_subsets`` random subsets of ``min(subset_size, N_a, N_b)``
  examples of each set (Binkowski et al.'s estimator; near 0, possibly negative,
  for two samples of one distribution).

  Args:
    a: images ``uint8[N, H, W, C]`` or features ``[N, F]``.
    b: the same for the other set.
    num_subsets: subsets averaged.
    subset_size: examples per subset.
    seed: seed of the subsets.
    **kwargs: passed to `to_features`.

  Returns:
    KID as a float.

  References:
    Binkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018.
  """
  fa = np.asarray(to_features(a, **kwargs), np.float32)
  fb = np.asarray(to_features(b, **kwargs), np.float32)
  size = min(subset_size, len(fa), len(fb))
  if size < 2:
    raise ValueError("KID needs at least 2 examples in each set")
  rng = np.random.default_rng(seed)
  values = [float(_poly_mmd2(fa[rng.choice(len(fa), size, replace=False)],
                             fb[rng.choice(len(fb), size, replace=False)]))
            for _ in range(num_subsets)]
  return float(np.mean(values))


@functools.partial(jax.jit, static_argnums=2)
def _kth_distances(rows, data, k: int) -> jax.Array:
  """The distance of each row to its k-th nearest point of ``data`` (self included)."""
  d2 = (jnp.sum(rows ** 2, 1)[:, None] + jnp.sum(data ** 2, 1)[None]
        - 2.0 * _dot(rows, data.T))
  return jnp.sqrt(jnp.maximum(-jax.lax.top_k(-d2, k + 1)[0][:, k], 0.0))


@jax.jit
def _covered(rows, centres, radii) -> jax.Array:
  """Whether each row lies inside any ball ``(centre, radius)``."""
  d2 = (jnp.sum(rows ** 2, 1)[:, None] + jnp.sum(centres ** 2, 1)[None]
        - 2.0 * _dot(rows, centres.T))
  return jnp.any(d2 <= radii[None] ** 2, axis=1)


def _blocks(fn, rows, *args) -> np.ndarray:
  return np.concatenate([np.asarray(fn(rows[i:i + _BLOCK], *args))
                         for i in range(0, len(rows), _BLOCK)])


def _manifold_coverage(support, queries, k: int) -> float:
  """The fraction of ``queries`` inside the k-NN balls of ``support``."""
  radii = _blocks(_kth_distances, support, jnp.asarray(support), k)
  inside = _blocks(_covered, queries, jnp.asarray(support), jnp.asarray(radii))
  return float(np.mean(inside))


def precision_recall(real, fake, *, k: int = 3, **kwargs) -> tuple[float, float]:
  """Improved precision and recall of generated samples (k-NN manifolds).

  Each set's manifold is the union of balls around its points with the radius
  of the distance to the k-th nearest neighbour in the set. Precision is the
  fraction of ``fake`` inside the real manifold, recall the fraction of ``real``
  inside the fake one.

  Args:
    real: images ``uint8[N, H, W, C]`` or features ``[N, F]`` of real data.
    fake: the same for generated data.
    k: the neighbour defining the radii (3 in the paper).
    **kwargs: passed to `to_features`.

  Returns:
    ``(precision, recall)``, each in [0, 1].

  References:
    Kynkaanniemi, Karras, Laine, Lehtinen & Aila, "Improved Precision and Recall
    Metric for Assessing Generative Models", NeurIPS 2019.
  """
  fr = np.asarray(to_features(real, **kwargs), np.float32)
  ff = np.asarray(to_features(fake, **kwargs), np.float32)
  if min(len(fr), len(ff)) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} examples per set")
  return _manifold_coverage(fr, ff, k), _manifold_coverage(ff, fr, k)


def sample_metrics(real, fake, **kwargs) -> dict[str, float]:
  """``{"fid", "kid", "precision", "recall"}`` of ``fake`` against ``real``.

  Features are computed once per set (keyword arguments go to `to_features`).
  """
  fr, ff = to_features(real, **kwargs), to_features(fake, **kwargs)
  precision, recall = precision_recall(fr, ff)
  return {"fid": fid(fr, ff), "kid": kid(fr, ff), "precision": precision,
          "recall": recall}
