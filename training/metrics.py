"""Image- and pixel-level anomaly-detection metrics (AUROC, AP, F1-max, AUPRO), in plain numpy.

The image metrics reproduce scikit-learn exactly (``roc_auc_score``,
``average_precision_score`` and the F1-max taken over ``precision_recall_curve``);
scikit-learn is only the oracle of the tests, never imported here.

The pixel metrics are built for full test sets (e.g. 600 maps of 256x256 = 39M
pixels): the pixels are split once into the anomalous and the normal scores, kept
in the maps' own dtype (float32 maps stay float32; only the per-anomalous-pixel
AUPRO weights are float64), each sorted once (AUPRO alone partitions the normal
scores and sorts just their top ``max_fpr`` share), and every curve is then read
from cumulative counts with ``np.searchsorted``. Both are exact, ties included:

* AUROC is the Mann-Whitney statistic ``P(s_pos > s_neg) + 0.5 P(s_pos == s_neg)``,
  accumulated in integers, which equals the trapezoidal ROC area of scikit-learn.
* AUPRO is the MVTec AD definition (Bergmann et al.): the per-region overlap (PRO)
  averaged over all ground-truth connected components (8-connectivity, each image
  labelled on its own) plotted against the false-positive rate over all normal
  pixels, integrated with the trapezoid rule up to ``max_fpr`` (the curve is
  interpolated linearly at exactly ``max_fpr``) and divided by ``max_fpr``.

Every invalid input raises :class:`protoinspect.sdk.errors.InputError`, a ``ValueError``.
"""

from __future__ import annotations

from protoinspect.training.metrics_image import auroc, average_precision, f1_max, image_metrics
from protoinspect.training.metrics_pixel import aupro, pixel_auroc, pixel_metrics

__all__ = [
    "auroc",
    "aupro",
    "average_precision",
    "f1_max",
    "image_metrics",
    "pixel_auroc",
    "pixel_metrics",
]
