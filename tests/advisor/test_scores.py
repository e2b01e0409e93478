"""Transferability scores against direct reference computations and on features whose quality is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

import hftl
from hftl.advisor.scores import h_score, leep, logme, logme_evidence, one_hot


def direct_log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y | 0, I/beta + F F^T/alpha) per example: the evidence written out, no SVD, no iteration."""
    n = len(y)
    covariance = np.eye(n) / beta + features @ features.T / alpha
    return float(multivariate_normal(mean=np.zeros(n), cov=covariance).logpdf(y) / n)


@pytest.mark.parametrize("n,d", [(40, 5), (16, 30)])  # more examples than dims, and fewer
def test_logme_matches_the_directly_maximised_evidence(n, d):
    rng = np.random.default_rng(n)
    features = rng.normal(size=(n, d))
    y = (features[:, 0] + features[:, 1] > 0).astype(float)
    (found,) = logme_evidence(features, y[:, None])
    # the SVD formula equals the written-out Gaussian evidence at the same (alpha, beta) ...
    assert found.evidence == pytest.approx(
        direct_log_evidence(features, y, found.alpha, found.beta), abs=1e-10
    )
    # ... and the fixed point is the maximum a generic optimiser finds over (log alpha, log beta)
    best = minimize(
        lambda p: -direct_log_evidence(features, y, np.exp(p[0]), np.exp(p[1])),
        x0=[0.0, 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000},
    )
    assert found.evidence == pytest.approx(-best.fun, abs=1e-8)
    assert np.log(found.alpha) == pytest.approx(best.x[0], abs=1e-3)
    assert np.log(found.beta) == pytest.approx(best.x[1], abs=1e-3)


def test_logme_is_the_mean_over_classes_and_vectorised_like_one_column_at_a_time():
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(60, 8)), rng.integers(0, 3, size=60)
    targets = one_hot(labels)
    columns = [logme_evidence(features, targets[:, [k]])[0].evidence for k in range(3)]
    together = [e.evidence for e in logme_evidence(features, targets)]
    assert together == pytest.approx(columns, abs=1e-12)
    assert logme(features, labels) == pytest.approx(np.mean(columns))


def separable_and_noise(n: int = 300, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    separable = np.eye(classes)[labels] * 4 + rng.normal(size=(n, classes)) * 0.3
    separable = np.hstack([separable, rng.normal(size=(n, 5))])
    noise = rng.normal(size=separable.shape)
    return separable, noise, labels


def test_every_score_ranks_separable_features_above_noise():
    separable, noise, labels = separable_and_noise()
    assert logme(separable, labels) > logme(noise, labels) + 1.0
    assert h_score(separable, labels) > 1.9 > 0.2 > h_score(noise, labels)  # at most classes - 1 = 2


def test_logme_and_h_score_ignore_the_feature_scale():
    separable, _, labels = separable_and_noise()
    assert logme(100 * separable, labels) == pytest.approx(logme(separable, labels), abs=1e-8)
    assert h_score(100 * separable, labels) == pytest.approx(h_score(separable, labels), rel=1e-6)


def test_leep_matches_its_definition_and_prefers_an_informative_source_head():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=200)
    informative = np.where(labels[:, None] == 1, [0.1, 0.1, 0.8], [0.7, 0.2, 0.1])  # 3 source classes
    uninformative = np.full((200, 3), 1 / 3)
    joint = np.zeros((2, 3))
    for probs, y in zip(informative, labels, strict=True):
        joint[y] += probs / len(labels)
    conditional = joint / joint.sum(axis=0)
    expected = np.mean([np.log(conditional[y] @ probs) for probs, y in zip(informative, labels, strict=True)])
    assert leep(informative, labels) == pytest.approx(expected)
    assert leep(uninformative, labels) == pytest.approx(np.log(0.5), abs=0.01)  # balanced: the class prior
    assert 0 > leep(informative, labels) > leep(uninformative, labels) + 0.3


def test_scores_reject_malformed_inputs():
    with pytest.raises(hftl.DataError, match="one label per feature row"):
        logme(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(hftl.DataError, match="softmax"):
        leep(np.ones((4, 2)), np.array([0, 1, 0, 1]))
    assert np.isfinite(logme(np.zeros((6, 3)), np.array([0, 1] * 3)))  # constant features: label prior only
