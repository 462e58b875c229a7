"""Geometry metrics against scikit-learn (silhouette, Calinski-Harabasz, confusion matrix) and loop references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from vjepa.evals.metrics import (
    calinski_harabasz_score,
    class_cosine_similarity,
    classification_summary,
    confusion_matrix,
    geometry_metrics,
    pair_similarities,
    per_class_accuracy,
    silhouette_score,
    token_statistics,
)

sk_metrics = pytest.importorskip("sklearn.metrics")


def clustered(n_per: tuple[int, ...] = (12, 9, 15, 1, 7), dim: int = 6, seed: int = 0):
    """Gaussian blobs around random centres (one singleton class), labels not contiguous (0, 2, 5, ...)."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(len(n_per), dim, generator=g)
    x = torch.cat([c + torch.randn(n, dim, generator=g) for c, n in zip(centres, n_per)])
    ids = torch.tensor([0, 2, 5, 6, 9])[: len(n_per)]
    y = torch.cat([torch.full((n,), int(i)) for i, n in zip(ids, n_per)])
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_matches_sklearn(metric: str, seed: int) -> None:
    x, y = clustered(seed=seed)
    expected = sk_metrics.silhouette_score(x.double().numpy(), y.numpy(), metric=metric)
    assert silhouette_score(x, y, metric) == pytest.approx(expected, abs=1e-9)
    assert silhouette_score(x, y, metric, chunk=7) == pytest.approx(expected, abs=1e-9)  # row chunks agree


def test_silhouette_overlapping_classes_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(80, 5, generator=g), torch.randint(0, 4, (80,), generator=g)  # random labels: near 0
    for metric in ("cosine", "euclidean"):
        expected = sk_metrics.silhouette_score(x.double().numpy(), y.numpy(), metric=metric)
        assert silhouette_score(x, y, metric) == pytest.approx(expected, abs=1e-9)


def test_calinski_harabasz_matches_sklearn() -> None:
    for seed in (0, 1):
        x, y = clustered(seed=seed)
        expected = sk_metrics.calinski_harabasz_score(x.double().numpy(), y.numpy())
        assert calinski_harabasz_score(x, y) == pytest.approx(expected, rel=1e-10)


def test_metrics_reject_degenerate_labels() -> None:
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="number of classes"):
        silhouette_score(x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="number of classes"):
        calinski_harabasz_score(x, torch.arange(10))
    with pytest.raises(ValueError, match="unknown silhouette metric"):
        silhouette_score(x, torch.arange(10) % 2, "manhattan")
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        geometry_metrics(torch.randn(10), torch.arange(10) % 2)


def loop_class_cosine(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, dict[int, float]]:
    intra, inter, per = [], [], {}
    for i, j in itertools.combinations(range(len(y)), 2):
        s = float(F.cosine_similarity(x[i].double(), x[j].double(), dim=0))
        (intra if y[i] == y[j] else inter).append(s)
        if y[i] == y[j]:
            per.setdefault(int(y[i]), []).append(s)
    return sum(intra) / len(intra), sum(inter) / len(inter), {c: sum(v) / len(v) for c, v in per.items()}


def test_class_cosine_similarity_matches_loop() -> None:
    x, y = clustered(seed=2)
    intra, inter, per = loop_class_cosine(x, y)
    got = class_cosine_similarity(x, y)
    assert got["intra_class_cosine"] == pytest.approx(intra, abs=1e-10)
    assert got["inter_class_cosine"] == pytest.approx(inter, abs=1e-10)
    assert got["intra_inter_ratio"] == pytest.approx(intra / inter, rel=1e-9)
    classes = torch.unique(y).tolist()
    for c, value in zip(classes, got["intra_class_cosine_per_class"]):
        if c in per:
            assert value == pytest.approx(per[c], abs=1e-10)
        else:
            assert math.isnan(value)  # the singleton class has no pair
    same, diff = pair_similarities(x, y)
    assert len(same) + len(diff) == len(y) * (len(y) - 1) // 2
    assert float(same.mean()) == pytest.approx(intra, abs=1e-10)
    assert float(diff.mean()) == pytest.approx(inter, abs=1e-10)


def test_geometry_metrics_orders_separated_above_mixed() -> None:
    x, y = clustered(seed=4)
    g = geometry_metrics(x, y)
    assert set(g) >= {"silhouette_cosine", "silhouette_euclidean", "calinski_harabasz", "intra_inter_ratio"}
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    r = geometry_metrics(x, shuffled)
    assert g["silhouette_euclidean"] > 0.3 > r["silhouette_euclidean"]
    assert g["calinski_harabasz"] > 10 * r["calinski_harabasz"]
    assert g["intra_class_cosine"] > r["intra_class_cosine"]


def test_confusion_and_per_class_accuracy() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3])
    pred = torch.tensor([0, 1, 0, 1, 1, 3, 0, 3, 2])
    cm = confusion_matrix(pred, labels, 4)
    expected = sk_metrics.confusion_matrix(labels.numpy(), pred.numpy(), labels=list(range(4)))
    assert cm.tolist() == expected.tolist()
    acc = per_class_accuracy(pred, labels, 4)
    assert acc[0] == pytest.approx(2 / 3) and acc[1] == 1.0 and math.isnan(acc[2]) and acc[3] == 0.5
    s = classification_summary(pred, labels, 4)
    present = torch.tensor([2 / 3, 1.0, 0.5], dtype=torch.float64)
    assert s["accuracy"] == pytest.approx(6 / 9)
    assert s["balanced_accuracy"] == pytest.approx(float(present.mean()))
    assert s["per_class_std"] == pytest.approx(float(present.std(unbiased=False)))
    assert (s["per_class_min"], s["per_class_max"]) == (0.5, 1.0)
    assert s["confusion_matrix"] == cm.tolist()


def test_token_statistics_against_loops_and_hand_values() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 4, generator=g) @ torch.randn(4, 4, generator=g)  # [N, K, D]
    st = token_statistics(x)
    n, k, d = x.shape
    within = sum(float(x[i, :, c].std()) for i in range(n) for c in range(d)) / (n * d)
    means = [[float(x[i, :, c].mean()) for c in range(d)] for i in range(n)]
    across = sum(float(torch.tensor([means[i][c] for i in range(n)]).std()) for c in range(d)) / d
    assert math.isclose(st["within_across_spread"], within / across, rel_tol=1e-5)
    ev = torch.linalg.eigvalsh(torch.cov(x.reshape(-1, d).T.double())).flip(0)
    p = ev / ev.sum()
    assert math.isclose(st["effective_rank"], math.exp(-float((p * p.log()).sum())), rel_tol=1e-4)
    assert math.isclose(st["top3_variance"], float(p[:3].sum()), rel_tol=1e-5)
    # Every token of a clip the same (the partial collapse): within-clip spread 0; two equal directions: rank 2.
    flat = torch.randn(6, 1, 3, generator=g).expand(6, 5, 3)
    assert token_statistics(flat)["within_across_spread"] == 0.0
    two = torch.zeros(2, 2, 3)
    two[0, 0, 0], two[0, 1, 0], two[1, 0, 1], two[1, 1, 1] = 1.0, -1.0, 1.0, -1.0
    assert math.isclose(token_statistics(two)["effective_rank"], 2.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="token_statistics"):
        token_statistics(torch.zeros(3, 4))
