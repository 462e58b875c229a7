"""Closed-form ridge classifier with the regularisation picked by exact leave-one-out, for frozen features.

The linear probe of the chiral benchmark (LiFT paper, Sec. 3 "Evaluation protocol": one linear classifier per
chiral pair) and of the encoder (+) LiFT comparison (LiFT paper, Table 5). As scikit-learn's RidgeClassifier:
targets are +-1 one-vs-all codes ([N, 1] for two classes: the second class is +1), an unpenalised intercept
(X and Y centred), weights W = (Xc^T Xc + alpha I)^-1 Xc^T Yc; prediction = argmax of the scores (two classes:
score > 0 -> second class). Features are first standardised with the training mean and standard deviation
(population std; constant features keep scale 1, as sklearn's StandardScaler), so one alpha grid fits every
feature width and scale.

Alpha selection (`fit_ridge_cv`): one thin SVD of the centred training features Xc = U S V^T serves every alpha
of the grid. The hat matrix of the penalised least-squares problem with an unpenalised intercept is
H = 11^T / N + U diag(s^2 / (s^2 + alpha)) U^T, and the leave-one-out residuals are exactly
(y_i - yhat_i) / (1 - H_ii) (the usual identity for quadratic penalties). We keep the alpha with the best
leave-one-out accuracy, ties broken by the smaller leave-one-out squared error, then by the larger alpha.
The standardisation statistics use all training samples, including the one left out (as sklearn's RidgeCV).
Everything is computed in float64.

Not from the official code (the LiFT paper trains its linear probes with SGD); a closed form is deterministic,
needs no learning-rate search and takes milliseconds on CPU.

Shapes: N samples, F feature width, C classes (A outputs: 1 for two classes, else C), G alphas in the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


@dataclass(frozen=True)
class RidgeClassifier:
    """A fitted ridge classifier: standardisation (mean, scale), weights [F, A], bias [A], class labels [C]."""

    mean: torch.Tensor  # [F]
    scale: torch.Tensor  # [F]
    weight: torch.Tensor  # [F, A]
    bias: torch.Tensor  # [A]
    classes: torch.Tensor  # [C] int64, sorted
    alpha: float

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, F] -> scores [N, A] (float64)."""
        z = (x.double() - self.mean) / self.scale  # [N, F]
        return z @ self.weight + self.bias  # [N, A]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, F] -> labels [N] (values from `classes`)."""
        return self.classes[_argmax_scores(self.decision_function(x))]

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of x [N, F] whose prediction equals y [N]."""
        return float((self.predict(x) == y.to(self.classes.device)).double().mean())


def _argmax_scores(scores: torch.Tensor) -> torch.Tensor:
    """scores [N, A] -> class positions [N]; one output means two classes (score > 0 -> position 1)."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).long()
    return scores.argmax(dim=1)


def _prepare(x: torch.Tensor, y: torch.Tensor, standardize: bool) -> tuple[torch.Tensor, ...]:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"ridge: expected x [N, F] and y [N], got {list(x.shape)} and {list(y.shape)}")
    classes, pos = torch.unique(y.long(), sorted=True, return_inverse=True)  # [C], [N]
    if classes.numel() < 2:
        raise ValueError(f"ridge: need at least two classes in the training labels, got {classes.tolist()}")
    x = x.double()
    if standardize:
        mean = x.mean(dim=0)  # [F]
        scale = x.std(dim=0, correction=0)  # [F]
        constant = scale <= 1e-12 * mean.abs().clamp_min(1.0)  # [F]
        scale = torch.where(constant, torch.ones_like(scale), scale)
    else:
        mean, scale = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    z = (x - mean) / scale  # [N, F]
    n_out = 1 if classes.numel() == 2 else classes.numel()
    codes = -torch.ones(x.shape[0], classes.numel(), dtype=x.dtype)
    codes[torch.arange(x.shape[0]), pos] = 1.0  # [N, C]
    targets = codes[:, 1:] if n_out == 1 else codes  # [N, A]
    return z, targets, pos, classes, mean, scale


def fit_ridge(x: torch.Tensor, y: torch.Tensor, alpha: float, *, standardize: bool = True) -> RidgeClassifier:
    """Fit on x [N, F], labels y [N] (any integers, at least two distinct) with a fixed alpha."""
    return fit_ridge_cv(x, y, alphas=(alpha,), standardize=standardize)[0]


def fit_ridge_cv(
    x: torch.Tensor, y: torch.Tensor, *, alphas: Sequence[float] = ALPHAS, standardize: bool = True
) -> tuple[RidgeClassifier, dict[float, dict[str, float]]]:
    """Fit for every alpha via one SVD; return the classifier of the alpha with the best leave-one-out accuracy
    and {alpha: {"loo_accuracy", "loo_mse"}} for the whole grid (with one alpha no LOO is computed: empty dict)."""
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"ridge: alphas must be a non-empty list of positive numbers, got {list(alphas)}")
    z, t, pos, classes, mean, scale = _prepare(x, y, standardize)
    zc_mean, t_mean = z.mean(dim=0), t.mean(dim=0)  # [F], [A]
    zc, tc = z - zc_mean, t - t_mean  # [N, F], [N, A]
    u, s, vh = torch.linalg.svd(zc, full_matrices=False)  # [N, R], [R], [R, F]
    keep = s > s.max() * 1e-12  # drop the null space (rank R <= min(N, F))
    u, s, vh = u[:, keep], s[keep], vh[keep]
    ut_t = u.T @ tc  # [R, A]
    n = z.shape[0]
    scores: dict[float, dict[str, float]] = {}
    best: tuple[float, float, float] | None = None
    for alpha in alphas:
        if len(alphas) == 1:
            break
        shrink = s**2 / (s**2 + alpha)  # [R]
        fitted = t_mean + u @ (shrink[:, None] * ut_t)  # [N, A]
        h_diag = 1.0 / n + (u**2 @ shrink)  # [N]
        loo = t - (t - fitted) / (1.0 - h_diag).clamp_min(1e-12)[:, None]  # [N, A] leave-one-out scores
        acc = float((_argmax_scores(loo) == pos).double().mean())
        mse = float(((t - loo) ** 2).mean())
        scores[float(alpha)] = {"loo_accuracy": acc, "loo_mse": mse}
        key = (acc, -mse, float(alpha))
        if best is None or key > best:
            best = key
    alpha = float(alphas[0]) if best is None else best[2]
    coef = vh.T @ ((s / (s**2 + alpha))[:, None] * ut_t)  # [F, A]
    bias = t_mean - zc_mean @ coef  # [A]
    clf = RidgeClassifier(mean=mean, scale=scale, weight=coef, bias=bias, classes=classes, alpha=alpha)
    return clf, scores
