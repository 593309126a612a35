"""Figures for evaluation, as plain functions of arrays: retrieval mAP / R@1, Fréchet distance,
Inception-style score, pairwise diversity. Used by `s2i_train.eval` with the judge's features."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval_scores(
    queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
    exclude_self: bool = False,
) -> dict[str, float]:
    """Cosine retrieval by class: mean average precision and recall@1 (the top hit has the query's class).

    `exclude_self` drops the diagonal when queries and gallery are the same set (speech→speech)."""
    q = _l2_normalise(queries)
    g = _l2_normalise(gallery)
    sims = q @ g.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    aps, top1 = [], []
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")
        if exclude_self:
            order = order[order != i]
        relevant = gallery_labels[order] == query_labels[i]
        hits = np.cumsum(relevant)
        if hits[-1] == 0:
            continue
        precision_at_hit = hits[relevant] / (np.flatnonzero(relevant) + 1)
        aps.append(precision_at_hit.mean())
        top1.append(float(relevant[0]))
    return {"mAP": float(np.mean(aps)) if aps else 0.0, "R@1": float(np.mean(top1)) if top1 else 0.0}


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID's formula)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.cov(a, rowvar=False)
    cov_b = np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # A singular product (fewer samples than feature dimensions) is handled just below, so scipy's warning
        # about it would only alarm.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise both covariances slightly, as the reference FID code does.
        eye = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    covmean = np.real(covmean)
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def inception_style_score(probs: np.ndarray, splits: int = 1) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over rows of class probabilities; mean and std over splits."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    scores = []
    for part in np.array_split(probs, max(1, splits)):
        if len(part) == 0:
            continue
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part) - np.log(marginal))).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def mean_pairwise_distance(groups: list[np.ndarray]) -> float:
    """Mean Euclidean distance between all pairs inside each group, averaged over groups with ≥ 2 rows."""
    values = []
    for g in groups:
        g = np.asarray(g, dtype=np.float64)
        if len(g) < 2:
            continue
        diff = g[:, None, :] - g[None, :, :]
        dist = np.sqrt((diff**2).sum(-1))
        iu = np.triu_indices(len(g), 1)
        values.append(dist[iu].mean())
    return float(np.mean(values)) if values else 0.0


def linear_probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, l2: float = 1e-3,
) -> float:
    """Test accuracy of a multinomial logistic regression fitted on (train_x, train_y).

    Features are standardised with the training statistics; the fit is L-BFGS on the L2-regularised mean
    cross-entropy, so the figure is deterministic. On speech embeddings with train and test from disjoint
    colour–shape combinations, it tells whether an attribute is encoded in a way that carries over to
    unseen pairs (what the generator needs), separately from how well a generator then uses it."""
    train_x = np.asarray(train_x, dtype=np.float64)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    classes = int(max(np.max(train_y), np.max(test_y))) + 1
    w, b = fit_softmax_regression((train_x - mean) / std, train_y, classes, l2)
    predicted = (((np.asarray(test_x, dtype=np.float64) - mean) / std) @ w + b).argmax(1)
    return float((predicted == np.asarray(test_y)).mean())


def fit_softmax_regression(x: np.ndarray, y: np.ndarray, classes: int, l2: float = 1e-3,
                           offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, L-BFGS on the L2-regularised mean cross-entropy (deterministic):
    weights (D, classes) and biases (classes,) with logits = x @ w + b. `y` is (n,) labels or (n, classes)
    target probabilities. `offsets` (n, classes) are added to the logits while fitting only (logit adjustment):
    what they already explain, the weights need not learn."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    onehot = np.eye(classes)[y] if y.ndim == 1 else y.astype(np.float64)
    n, d = x.shape

    def loss_and_grad(flat):
        w, b = flat[: d * classes].reshape(d, classes), flat[d * classes :]
        logits = x @ w + b
        logp = log_softmax(logits if offsets is None else logits + offsets, axis=1)
        loss = -(onehot * logp).sum() / n + 0.5 * l2 * (w * w).sum()
        delta = (np.exp(logp) - onehot) / n
        return loss, np.concatenate([(x.T @ delta + l2 * w).ravel(), delta.sum(0)])

    fit = minimize(loss_and_grad, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                   options={"maxiter": 500})
    return fit.x[: d * classes].reshape(d, classes), fit.x[d * classes :]
