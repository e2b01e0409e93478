"""Transferability scores: how well frozen features (or a source head) fit a target task, without training.

- ``logme`` (You et al., ICML 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"): the
  log marginal likelihood (evidence) of a Bayesian linear model from features to one-hot labels, maximised over the
  prior precision ``alpha`` and noise precision ``beta`` by the paper's fixed-point iteration, per example and
  averaged over classes. One SVD of the feature matrix serves every class and every iteration.
- ``h_score`` (Bao et al., ICIP 2019, "An Information-Theoretic Approach to Transferability in Task Transfer
  Learning"): ``tr(cov(f)^+ cov(E[f | y]))``, how much of the feature variance lies between the class means.
- ``leep`` (Nguyen et al., ICML 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations"):
  the average log-likelihood of the target labels under the empirical predictor built from the pretrained head's
  source-class probabilities. Needs a pretrained classifier; hftl computes it only when the checkpoint has one.
- ``probe_accuracy``: the cross-validated accuracy of a linear probe (standardised features, ridge classifier) on
  the features. Unlike LogME it is in the units the runs are judged in, so two sets of features (pretrained and
  random weights) compare on the same scale with a binomial standard error (``hftl.advisor.source_check``).

All three are higher-is-better. LogME is in nats per example and does not change when the features are rescaled
(alpha absorbs the scale), but it does depend on the feature dimension and on the label entropy: compare scores of
the same dataset only, and prefer a relative criterion (see ``hftl.advisor.decision``). Numpy only, vectorised over classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hftl.errors import DataError


@dataclass(frozen=True)
class Evidence:
    """LogME's result for one target column: the maximised evidence per example and where it is reached."""

    evidence: float
    alpha: float
    beta: float


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise DataError(f"features must be a 2-D array (examples x dims), got shape {features.shape}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise DataError(
            f"labels must be a 1-D array with one label per feature row; got {labels.shape} for {features.shape}"
        )
    if features.shape[0] < 2:
        raise DataError("transferability scores need at least 2 examples")
    if not np.all(np.isfinite(features)):
        raise DataError("features contain NaN or infinite values")
    return features, labels


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Labels (any hashable values) -> an examples x classes 0/1 matrix, classes in sorted order."""
    _, index = np.unique(labels, return_inverse=True)
    return np.eye(index.max() + 1)[index]


def logme_evidence(
    features: np.ndarray, targets: np.ndarray, max_iter: int = 100, tol: float = 1e-6
) -> list[Evidence]:
    """Maximised evidence per example for each column of ``targets`` (examples x K real values).

    The model is ``y = F w + noise``, ``w ~ N(0, alpha^-1 I)``, ``noise ~ N(0, beta^-1 I)``. With the SVD
    ``F = U diag(sigma) V^T``, the posterior mean, its residual and the log-determinant all reduce to sums over the
    singular values, so each fixed-point update (``alpha = gamma / |m|^2``, ``beta = (n - gamma) / |y - F m|^2``)
    costs O(K r) after the one O(n d r) decomposition.
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n, d = features.shape
    u, sigma, _ = np.linalg.svd(features, full_matrices=False)
    keep = sigma > sigma.max(initial=0.0) * 1e-10 if sigma.size else sigma.astype(bool)
    u, s = u[:, keep], sigma[keep] ** 2  # eigenvalues of F^T F; the other d - r are zero
    r = s.size
    z = u.T @ targets  # r x K: targets in the feature directions
    total = np.sum(targets**2, axis=0)  # |y|^2
    # |y|^2 outside the span of F (never fitted): exactly 0 when F spans every example (n <= rank), and never
    # negative, which rounding in the subtraction could otherwise make it (and send beta to infinity)
    outside = np.zeros(targets.shape[1]) if r >= n else np.maximum(total - np.sum(z**2, axis=0), 0.0)
    alpha = np.ones(targets.shape[1])
    beta = np.ones(targets.shape[1])
    for _ in range(max_iter):
        denom = alpha[None, :] + beta[None, :] * s[:, None]  # r x K
        gamma = np.sum(beta[None, :] * s[:, None] / denom, axis=0)
        m2 = np.sum((beta[None, :] * np.sqrt(s)[:, None] * z / denom) ** 2, axis=0)
        res2 = outside + np.sum((alpha[None, :] * z / denom) ** 2, axis=0)
        new_alpha = np.maximum(gamma / np.maximum(m2, 1e-30), 1e-30)  # r = 0: alpha cancels out
        new_beta = np.maximum(n - gamma, 1e-30) / np.maximum(res2, 1e-30)
        converged = np.all(np.abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta))
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    denom = alpha[None, :] + beta[None, :] * s[:, None]
    m2 = np.sum((beta[None, :] * np.sqrt(s)[:, None] * z / denom) ** 2, axis=0)
    res2 = outside + np.sum((alpha[None, :] * z / denom) ** 2, axis=0)
    log_det = np.sum(np.log(denom), axis=0) + (d - r) * np.log(alpha)
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * log_det
        - beta / 2 * res2
        - alpha / 2 * m2
        - n / 2 * np.log(2 * np.pi)
    ) / n
    return [Evidence(float(e), float(a), float(b)) for e, a, b in zip(evidence, alpha, beta, strict=True)]


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` (examples x dims) for class ``labels``: the mean over classes of the maximised
    evidence per example of a linear model predicting that class's one-hot column. Higher is better."""
    features, labels = _check(features, labels)
    return float(np.mean([e.evidence for e in logme_evidence(features, one_hot(labels))]))


def h_score(features: np.ndarray, labels: np.ndarray, rcond: float = 1e-8) -> float:
    """H-score: ``tr(pinv(cov(f)) cov(E[f|y]))``; between 0 and the number of classes minus 1. Higher is better."""
    features, labels = _check(features, labels)
    centred = features - features.mean(axis=0, keepdims=True)
    targets = one_hot(labels)
    counts = targets.sum(axis=0)
    class_means = (targets.T @ centred) / counts[:, None]  # K x d
    conditional = class_means[np.argmax(targets, axis=1)]  # each example replaced by its class mean
    cov_f = centred.T @ centred / len(centred)
    cov_g = conditional.T @ conditional / len(centred)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=rcond, hermitian=True) @ cov_g))


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP from the pretrained head's source-class probabilities (examples x source classes, rows sum to 1).

    ``P(y, z) = mean_i theta_z(x_i) [y_i = y]``, ``P(y | z) = P(y, z) / P(z)``;
    ``LEEP = mean_i log sum_z P(y_i | z) theta_z(x_i)``. At most 0; higher is better.
    """
    probs, labels = _check(source_probabilities, labels)
    if np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise DataError("LEEP needs probabilities: non-negative rows that sum to 1 (apply softmax to logits)")
    targets = one_hot(labels)  # n x K
    joint = targets.T @ probs / len(probs)  # K x Z
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-30)  # P(y | z)
    expected = probs @ conditional.T  # n x K: the empirical predictor's P(y | x)
    chosen = np.sum(expected * targets, axis=1)
    return float(np.mean(np.log(np.maximum(chosen, 1e-30))))


PROBE_FOLDS = 5
# the folds are drawn this many times and the accuracies averaged: with one draw the source check's share on
# distilbert-domains-20 (510 examples) spread over 0.39-0.59 across five run seeds, and over 0.34-0.49 with four
# (bench/results/source_check_seeds.jsonl), enough to flip the check between seeds. The cost is four times the
# fits': on 2,000 examples of 768 features 2.8 s a depth against 0.7 s (one CPU; a BERT-base check probes 26 depths),
# and MiniLM-L6's check on 2,000 sentences took 40 s with its features cached (bench/results/source_check.jsonl)
PROBE_REPEATS = 4


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """Stratified ``PROBE_FOLDS``-fold accuracy of a ridge classifier on standardised ``features`` (its penalty is
    the feature count: a strong prior, as a probe on a few hundred examples needs), averaged over ``PROBE_REPEATS``
    draws of the folds. None when a class has fewer than two examples (no fold could both train and test on it).
    Higher is better."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = _check(features, labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    folds = RepeatedStratifiedKFold(
        n_splits=int(min(PROBE_FOLDS, counts.min())), n_repeats=PROBE_REPEATS, random_state=seed
    )
    probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=float(features.shape[1])))
    return float(np.mean(cross_val_score(probe, features, labels, cv=folds)))


__all__ = ["Evidence", "h_score", "leep", "logme", "logme_evidence", "one_hot", "probe_accuracy"]
