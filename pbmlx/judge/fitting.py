"""The logistic fit behind every judge map (offline only: the runtime judge never imports this).

Two callers: the calibration tool ``tests/judge_fit.py`` (the packaged maps) and ``pbmlx
judge-bench --fit-clip`` (:func:`pbmlx.judge.bench.fit_clip_map`, the CLIP map on a user's
preference pairs), which needs it in the installed package; it imports it only on that path.
Nothing in :mod:`pbmlx.judge.core`, :mod:`~pbmlx.judge.criteria`, :mod:`~pbmlx.judge.maps`,
:mod:`~pbmlx.judge.measure`, :mod:`~pbmlx.judge.verdict` or :mod:`~pbmlx.judge.retry` does
(``tests/test_judge_structure.py`` checks it).
"""

from __future__ import annotations

import numpy as np

L2 = 1.0  # ridge on the standardised weights, in units of one (weighted) example's loss


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = L2, iters: int = 100
) -> tuple[np.ndarray, float]:
    """Weights (all <= 0) and bias of a balanced, ridge-regularised logistic regression.

    Minimises ``sum_i c_i BCE(y_i, sigmoid(b + w x_i)) + l2 / 2 sum_k (w_k sd_k)^2`` with class
    weights ``c_i = n / (2 n_{y_i})`` (each class carries half the total weight, so the fit does
    not encode how many bad examples were generated) and ``sd_k`` the standard deviation of
    feature k, by Newton's method (float64). Features whose weight comes out positive (a
    defect that would *raise* the score) are dropped and the rest refitted. ``y`` needs both
    labels (ValueError otherwise).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    # The ridge acts on standardised features (w_k * sd_k), so a feature's units do not
    # decide how hard its weight is held back; the weights are returned in raw units.
    sd = x.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    x = x / sd
    n1 = float(y.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("a calibration map needs examples of both labels")
    c = np.where(y > 0.5, n / (2 * n1), n / (2 * n0))
    active = np.ones(d, bool)
    while True:
        xa = np.concatenate([np.ones((n, 1)), x[:, active]], axis=1)
        theta = np.zeros(xa.shape[1])
        reg = np.full(xa.shape[1], l2)
        reg[0] = 0.0
        for _ in range(iters):
            z = xa @ theta
            p = 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
            grad = xa.T @ (c * (p - y)) + reg * theta
            h = (xa * (c * p * (1 - p))[:, None]).T @ xa + np.diag(reg) + 1e-9 * np.eye(len(theta))
            step = np.linalg.solve(h, grad)
            theta -= step
            if float(np.abs(step).max()) < 1e-10:
                break
        w = np.zeros(d)
        w[active] = theta[1:]
        if (w > 0).any():
            active &= w <= 0
            continue
        return w / sd, float(theta[0])
