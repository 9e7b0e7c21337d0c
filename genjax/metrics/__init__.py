"""Offline sample-quality metrics: FID, KID and precision/recall.

The feature space of 28x28x1 (MNIST-shaped) images is the penultimate layer of a
small MNIST classifier that genjax trains itself with a fixed recipe and seed
(`classifier`), cached in ``genjax.data.data_dir()`` after its first use. The
numbers are comparable across genjax models, not with the Inception-based FIDs
of papers. Any other data can be compared through its own features (``[N, F]``
arrays).

  from genjax import metrics
  metrics.fid(images_a, images_b)          # uint8 [N, 28, 28, 1], 0..255
  metrics.kid(images_a, images_b)
  metrics.precision_recall(real, fake)     # (precision, recall), k = 3
"""

from genjax.metrics import classifier
from genjax.metrics import models
from genjax.metrics.classifier import feature_network
from genjax.metrics.classifier import has_feature_network
from genjax.metrics.distances import fid
from genjax.metrics.distances import frechet_distance
from genjax.metrics.distances import kid
from genjax.metrics.distances import precision_recall
from genjax.metrics.distances import sample_metrics
from genjax.metrics.distances import to_features

__all__ = [
    "classifier",
    "feature_network",
    "fid",
    "frechet_distance",
    "has_feature_network",
    "kid",
    "models",
    "precision_recall",
    "sample_metrics",
    "to_features",
]
