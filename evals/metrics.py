"""Geometry of frozen features with their true classes, and classification summaries of a probe's predictions.

Metrics of the DINOv3-vs-V-JEPA 2 feature analysis (Kodathala & Vunnam 2025, arXiv 2509.21595, Sec. 3-4):
- silhouette score, both cosine (distance 1 - cos) and euclidean, equal to scikit-learn's `silhouette_score`
  (a(i): mean distance to the other members of i's class; b(i): smallest mean distance to another class;
  s(i) = (b - a) / max(a, b), 0 for a sample alone in its class; the score is the mean over samples);
- Calinski-Harabasz index (between-class over within-class dispersion, each divided by its degrees of freedom),
  equal to scikit-learn's `calinski_harabasz_score`;
- mean intra-class and inter-class cosine similarity over unordered pairs of distinct samples, and their ratio
  (the paper's "separation ratio"; only meaningful when the inter-class mean is positive), plus the per-class
  intra-class mean;
- statistics of token features [N, K, D] (not in the paper; the signs of collapse found on the demo): the
  effective rank of all tokens (exp entropy of the covariance spectrum), the share of variance in the top 3
  directions, and the within-clip / across-clip spread (mean std over the tokens of a clip, over the mean std
  across clips of the clip-mean feature; near 0 when every token of a clip carries the same feature);
- per-class accuracy of a probe, its spread (population std, min, max over the classes present) and the
  confusion matrix (rows true class, columns predicted, as scikit-learn's `confusion_matrix`).

All metrics are loop-free torch (class sums by one-hot matmuls); the silhouette works on row chunks of the
[N, N] distance matrix, computed in float64. The paper's numbers come from keyframe-selected UCF Sports clips;
here they are computed on whatever pooled features are passed in (`vjepa eval linear` uses the val split,
averaged over views).

Shapes: N samples, D width, C classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vjepa.losses import covariance_spectrum, spectrum_rank

SILHOUETTE_METRICS = ("cosine", "euclidean")


def _check(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {list(features.shape)}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must be [N] with N={features.shape[0]}, got shape {list(labels.shape)}")
    classes, inverse = torch.unique(labels, return_inverse=True)  # relabel to 0..C'-1
    return features.double(), inverse, len(classes)


def _pairwise_distance(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T  # [n, N]
    return torch.cdist(a, b)  # [n, N]


def silhouette_score(features: torch.Tensor, labels: torch.Tensor, metric: str = "cosine", chunk: int = 2048) -> float:
    """Mean silhouette coefficient of `features` [N, D] with classes `labels` [N] (scikit-learn's definition)."""
    if metric not in SILHOUETTE_METRICS:
        raise ValueError(f"unknown silhouette metric {metric!r}; valid: {SILHOUETTE_METRICS}")
    x, y, c = _check(features, labels)
    n = x.shape[0]
    if not 2 <= c <= n - 1:
        raise ValueError(f"silhouette needs 2 <= number of classes <= N - 1, got {c} classes for N={n}")
    onehot = F.one_hot(y, c).double()  # [N, C]
    counts = onehot.sum(0)  # [C]
    scores = []
    for start in range(0, n, chunk):
        d = _pairwise_distance(x[start : start + chunk], x, metric).clamp_min(0.0)  # [n, N]
        own = y[start : start + chunk]  # [n]
        sums = d @ onehot  # [n, C] summed distance to each class
        n_own = counts[own]  # [n]
        a = sums.gather(1, own[:, None]).squeeze(1) / (n_own - 1).clamp_min(1)  # [n]; self distance is 0
        mean_other = (sums / counts).scatter(1, own[:, None], float("inf"))  # [n, C]
        b = mean_other.min(dim=1).values  # [n]
        s = (b - a) / torch.maximum(a, b)
        scores.append(torch.where((n_own > 1) & (torch.maximum(a, b) > 0), s, torch.zeros_like(s)))
    return float(torch.cat(scores).mean())


def calinski_harabasz_score(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Variance ratio criterion of `features` [N, D] with classes `labels` [N] (scikit-learn's definition)."""
    x, y, c = _check(features, labels)
    n = x.shape[0]
    if not 2 <= c <= n - 1:
        raise ValueError(f"Calinski-Harabasz needs 2 <= number of classes <= N - 1, got {c} classes for N={n}")
    onehot = F.one_hot(y, c).double()  # [N, C]
    counts = onehot.sum(0)  # [C]
    centroids = (onehot.T @ x) / counts[:, None]  # [C, D]
    mean = x.mean(0)  # [D]
    between = (counts * ((centroids - mean) ** 2).sum(1)).sum()
    within = ((x - centroids[y]) ** 2).sum()
    if within == 0:
        return 1.0  # scikit-learn's convention for perfectly collapsed classes
    return float(between * (n - c) / (within * (c - 1)))


def class_cosine_similarity(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """Mean cosine similarity over pairs of distinct samples of the same class / of different classes.

    With unit vectors u_i and class sums s_c, the within-class pair sum is (|s_c|^2 - sum_i |u_i|^2) / 2 and the
    all-pairs sum is (|sum_i u_i|^2 - sum_i |u_i|^2) / 2, so nothing is O(N^2).
    """
    x, y, c = _check(features, labels)
    u = F.normalize(x, dim=1)  # [N, D]
    onehot = F.one_hot(y, c).double()  # [N, C]
    counts = onehot.sum(0)  # [C]
    self_sim = (u * u).sum(1)  # [N] (1, or 0 for a zero vector)
    class_sums = onehot.T @ u  # [C, D]
    intra_sums = ((class_sums**2).sum(1) - onehot.T @ self_sim) / 2  # [C]
    intra_pairs = counts * (counts - 1) / 2  # [C]
    total_sum = ((u.sum(0) ** 2).sum() - self_sim.sum()) / 2
    n = x.shape[0]
    inter_pairs = n * (n - 1) / 2 - intra_pairs.sum()
    intra = float(intra_sums.sum() / intra_pairs.sum()) if intra_pairs.sum() > 0 else float("nan")
    inter = float((total_sum - intra_sums.sum()) / inter_pairs) if inter_pairs > 0 else float("nan")
    per_class = torch.where(
        intra_pairs > 0, intra_sums / intra_pairs.clamp_min(1), torch.full_like(counts, float("nan"))
    )
    return {
        "intra_class_cosine": intra,
        "inter_class_cosine": inter,
        "intra_inter_ratio": intra / inter if inter == inter and inter != 0 else float("nan"),
        "intra_class_cosine_per_class": per_class.tolist(),
    }


def pair_similarities(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of every unordered pair of distinct samples: (same-class [P1], different-class [P2]).

    O(N^2) memory: for histograms of small sets (the report draws them for N <= 4096).
    """
    x, y, _ = _check(features, labels)
    u = F.normalize(x, dim=1)
    i, j = torch.triu_indices(len(y), len(y), offset=1)
    sims = (u[i] * u[j]).sum(1)  # [N (N - 1) / 2]
    same = y[i] == y[j]
    return sims[same], sims[~same]


def geometry_metrics(features: torch.Tensor, labels: torch.Tensor) -> dict:
    """Every geometry metric of pooled `features` [N, D] with true classes `labels` [N].

    Per-class lists are indexed by the sorted distinct labels present (listed under "classes").
    """
    _, _, c = _check(features, labels)
    return {
        "num_samples": int(features.shape[0]),
        "num_classes": c,
        "classes": torch.unique(labels).tolist(),
        "silhouette_cosine": silhouette_score(features, labels, "cosine"),
        "silhouette_euclidean": silhouette_score(features, labels, "euclidean"),
        "calinski_harabasz": calinski_harabasz_score(features, labels),
        **class_cosine_similarity(features, labels),
    }


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C, C] int64 counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[C] float: accuracy within each true class; NaN for classes without samples."""
    cm = confusion_matrix(pred, labels, num_classes).double()
    support = cm.sum(1)
    return torch.where(support > 0, cm.diagonal() / support.clamp_min(1), torch.full_like(support, float("nan")))


def classification_summary(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Top-1 accuracy, per-class accuracy with its spread over the classes present, and the confusion matrix."""
    per_class = per_class_accuracy(pred, labels, num_classes)
    present = per_class[~per_class.isnan()]
    return {
        "accuracy": float((pred == labels).double().mean()),
        "balanced_accuracy": float(present.mean()),
        "per_class_accuracy": per_class.tolist(),
        "per_class_std": float(present.std(unbiased=False)),
        "per_class_min": float(present.min()),
        "per_class_max": float(present.max()),
        "confusion_matrix": confusion_matrix(pred, labels, num_classes).tolist(),
    }


def token_statistics(tokens: torch.Tensor) -> dict:
    """Effective rank, top-3 variance share and within/across-clip spread of token features [N, K, D]."""
    if tokens.dim() != 3 or tokens.shape[0] < 2 or tokens.shape[1] < 2:
        raise ValueError(f"token_statistics needs tokens [N >= 2, K >= 2, D], got {tuple(tokens.shape)}")
    x = tokens.float()
    spec = covariance_spectrum(x.reshape(-1, x.shape[-1]))
    within = x.std(dim=1).mean()  # std over the tokens of each clip, averaged over clips and channels
    across = x.mean(dim=1).std(dim=0).mean()  # std over clips of the clip-mean feature, averaged over channels
    return {
        "effective_rank": float(spectrum_rank(spec)),
        "top3_variance": float(spec[:3].sum()),
        "within_across_spread": float(within / across.clamp_min(1e-12)),
    }
