"""Eqs. 4-14: information carried by image-level labels (natural log, nats).

With a uniform prior over N classes a pixel label holds ``log N`` nats. An
image with n true classes, m outlier labels and k kept true labels obeys the
paper's bounds ``1 <= n <= N``, ``1 <= m <= N - n`` and ``1 <= k < n``; an
argument outside its bound raises ``ValueError`` naming the bound. Every
function accepts scalars or numpy arrays (broadcast) and needs no torch.
"""

from __future__ import annotations

import numpy as np


def _ints(name: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return array.astype(np.int64)


def _require(condition, bound: str, **values) -> None:
    """ValueError naming ``bound`` and the ``values`` at its first failing element."""
    condition = np.asarray(condition)
    if condition.all():
        return
    first = np.unravel_index(np.argmin(condition), condition.shape)
    shown = ", ".join(f"{name}={np.broadcast_to(value, condition.shape)[first]}" for name, value in values.items())
    raise ValueError(f"out of domain: {bound} does not hold ({shown})")


def _out(value: np.ndarray):
    return float(value) if np.ndim(value) == 0 else value


def _check_N_n(N, n):
    N, n = _ints("N", N), _ints("n", n)
    _require(N >= 1, "N >= 1", N=N)
    _require((1 <= n) & (n <= N), "1 <= n <= N", N=N, n=n)
    return N, n


def _check_n_m(n, m, N=None):
    n, m = _ints("n", n), _ints("m", m)
    _require(n >= 1, "n >= 1", n=n)
    _require(m >= 1, "m >= 1", m=m)
    if N is not None:
        N, n = _check_N_n(N, n)
        _require(m <= N - n, "m <= N - n", N=N, n=n, m=m)
    return n, m


def _check_k(k, n=None):
    k = _ints("k", k)
    _require(k >= 1, "k >= 1", k=k)
    if n is not None:
        n = _ints("n", n)
        _require(k < n, "k < n", n=n, k=k)
    return k


def self_information(N):
    """Eq. 4: information of one pixel label under a uniform prior, ``log N``."""
    N = _ints("N", N)
    _require(N >= 1, "N >= 1", N=N)
    return _out(np.log(N))


def valid_information(n):
    """Eq. 5: information left once the n image classes are known, ``log n``."""
    n = _ints("n", n)
    _require(n >= 1, "n >= 1", n=n)
    return _out(np.log(n))


def removed_information(N, n):
    """Eq. 6: information removed per pixel by exact image labels, ``log(N/n)``."""
    N, n = _check_N_n(N, n)
    return _out(np.log(N / n))


def image_removed_information(N, n, w, h):
    """Eq. 6 summed over a w x h image: ``w * h * log(N/n)``."""
    w, h = _ints("w", w), _ints("h", h)
    _require((w >= 1) & (h >= 1), "w >= 1 and h >= 1", w=w, h=h)
    return _out(w * h * np.asarray(removed_information(N, n)))


def case1_learned(n, m):
    """Eq. 9: information to learn with m outlier labels, ``log(n + m)``."""
    n, m = _check_n_m(n, m)
    return _out(np.log(n + m))


def case1_removed(N, n, m):
    """Eq. 10: information removed with m outlier labels, ``log(N/(n + m))``."""
    n, m = _check_n_m(n, m, N)
    return _out(np.log(np.asarray(N) / (n + m)))


def case2_learned(k):
    """Eq. 11: information to learn when only k true labels are kept, ``log k``."""
    return _out(np.log(_check_k(k)))


def case2_lost(n, k):
    """Eq. 12: valid information lost by keeping k < n true labels, ``log(n/k)``."""
    n = _ints("n", n)
    k = _check_k(k, n)
    return _out(np.log(n / k))


def case3_learned(m, k):
    """Eq. 13: information to learn with m outliers and k kept labels, ``log(m + k)``."""
    m, k = _ints("m", m), _check_k(k)
    _require(m >= 1, "m >= 1", m=m)
    return _out(np.log(m + k))


def case3_outlier(m, k):
    """Eq. 14: outlier information added to the k kept labels, ``log((m + k)/k)``."""
    m, k = _ints("m", m), _check_k(k)
    _require(m >= 1, "m >= 1", m=m)
    return _out(np.log((m + k) / k))
