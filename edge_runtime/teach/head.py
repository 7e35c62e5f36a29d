"""The linear heads, in numpy: softmax regression with L2 by full-batch gradient descent, and imprinting
(normalised class means). Both end as one (K, D) weight and (K,) bias for a Gemm, so the ONNX head is
the same whichever wins.

Why no scikit-learn: ~0.9 s of import, +96 MB RSS and 41 MB of wheels on the board for a fit numpy does
in milliseconds at these sizes (issue 24's measurements)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

IMPRINT_SCALE = 16.0     # cosine similarity in [-1, 1] -> logits: softmax sharp enough to mean something


@dataclass(frozen=True)
class Linear:
    weight: np.ndarray     # (K, D)
    bias: np.ndarray       # (K,)
    normalise: bool        # L2-normalise the features first (imprinting)

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.normalise:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread while fitting: with two OpenBLAS threads a 500x1280x10 fit swung between 0.6 and
    2.2 s on the board (contention with inference), 40-220 ms on one. threadpoolctl is optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def fit_imprint(x: np.ndarray, y: np.ndarray, k: int) -> Linear:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    means = np.stack([unit[y == c].mean(axis=0) for c in range(k)])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return Linear(means * IMPRINT_SCALE, np.zeros(k), True)


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, *, l2: float = 1e-3, steps: int = 300,
                in_span: bool = True) -> Linear:
    """Multinomial logistic regression on standardised features, Nesterov-accelerated gradient descent
    with a step from the data's Lipschitz bound (no line search, no tuning per run); the standardisation
    is folded back into the weights so the ONNX head is one Gemm."""
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = ((x - mean) / std).astype(np.float64)
    n, d = z.shape
    basis = None
    if in_span and d > n:
        # Fewer pictures than features (the usual case: 20-200 pictures, 576-1280 features). With L2 the
        # optimum lies in the span of the pictures (representer theorem), so fit in its n-dim coordinates:
        # the same answer, each step n*n*k instead of n*d*k (80 pictures x 1280: 0.95 s -> tens of ms).
        u, sv, vt = np.linalg.svd(z, full_matrices=False)
        z, basis = u * sv, vt
    onehot = np.eye(k)[y]
    # Softmax cross-entropy's Hessian is at most 0.5 * ||z||^2 / n: the largest safe step.
    lipschitz = 0.5 * float(np.linalg.norm(z, ord=2) ** 2) / n + l2
    lr = 1.0 / lipschitz
    w = np.zeros((z.shape[1], k))
    b = np.zeros(k)
    w_prev, b_prev = w, b
    for t in range(1, steps + 1):
        mom = (t - 1) / (t + 2)
        vw, vb = w + mom * (w - w_prev), b + mom * (b - b_prev)
        logits = z @ vw + vb
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        w_prev, b_prev = w, b
        w = vw - lr * (z.T @ g + l2 * vw)
        b = vb - lr * g.sum(axis=0)
    if basis is not None:
        w = basis.T @ w
    weight = (w / std[:, None]).T
    bias = b - weight @ mean
    return Linear(weight, bias, False)


FITS = {"softmax": fit_softmax, "imprinting": fit_imprint}
