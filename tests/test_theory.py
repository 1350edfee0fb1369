"""Eqs. 4-14: closed forms, vectorisation, a measurement through ``fuse``, the
paper's relations as properties, and the domain checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.stats import entropy

from imgpix import fuse
from imgpix import theory as th


# ------------------------------------------------------------ closed forms
@pytest.mark.parametrize("N", [1, 2, 3, 21, 150])
def test_self_information(N):
    assert th.self_information(N) == pytest.approx(math.log(N), abs=1e-15)


@pytest.mark.parametrize("n", [1, 2, 7, 21])
def test_valid_information(n):
    assert th.valid_information(n) == pytest.approx(math.log(n), abs=1e-15)


@pytest.mark.parametrize("N, n", [(21, 1), (21, 3), (21, 21), (2, 1), (150, 7)])
def test_removed_information(N, n):
    assert th.removed_information(N, n) == pytest.approx(math.log(N / n), abs=1e-15)
    assert th.removed_information(N, n) == pytest.approx(math.log(N) - math.log(n), abs=1e-12)


def test_image_removed_information():
    assert th.image_removed_information(21, 3, 4, 5) == pytest.approx(20 * math.log(7), rel=1e-14)
    assert th.image_removed_information(21, 21, 500, 375) == 0.0


@pytest.mark.parametrize("n, m", [(1, 1), (3, 2), (5, 16)])
def test_case1(n, m):
    assert th.case1_learned(n, m) == pytest.approx(math.log(n + m), abs=1e-15)
    assert th.case1_removed(21, n, m) == pytest.approx(math.log(21 / (n + m)), abs=1e-15)


@pytest.mark.parametrize("n, k", [(2, 1), (5, 2), (21, 20)])
def test_case2(n, k):
    assert th.case2_learned(k) == pytest.approx(math.log(k), abs=1e-15)
    assert th.case2_lost(n, k) == pytest.approx(math.log(n / k), abs=1e-15)


@pytest.mark.parametrize("m, k", [(1, 1), (2, 3), (10, 4)])
def test_case3(m, k):
    assert th.case3_learned(m, k) == pytest.approx(math.log(m + k), abs=1e-15)
    assert th.case3_outlier(m, k) == pytest.approx(math.log((m + k) / k), abs=1e-15)


def test_known_values():
    assert th.self_information(1) == 0.0
    assert th.case2_learned(1) == 0.0
    assert th.removed_information(4, 1) == pytest.approx(2 * math.log(2))
    assert th.case3_outlier(1, 1) == pytest.approx(math.log(2))
    # integral floats are accepted
    assert th.removed_information(21.0, 3.0) == pytest.approx(math.log(7))


def test_scalar_outputs_are_python_floats():
    for value in (th.self_information(5), th.case1_removed(21, 2, 3), th.case3_outlier(2, 2)):
        assert isinstance(value, float)


def test_vectorised_numpy_input():
    N, n = np.array([21, 21, 10]), np.array([1, 3, 10])
    np.testing.assert_allclose(th.self_information(N), np.log(N))
    np.testing.assert_allclose(th.valid_information(n), np.log(n))
    np.testing.assert_allclose(th.removed_information(N, n), np.log(N / n))
    np.testing.assert_allclose(th.removed_information(21, n), np.log(21 / n))  # broadcast
    np.testing.assert_allclose(th.image_removed_information(N, n, 4, np.array([1, 2, 3])), [4, 8, 12] * np.log(N / n))
    m = np.array([1, 2, 0 + 1])
    np.testing.assert_allclose(th.case1_learned(n, m), np.log(n + m))
    np.testing.assert_allclose(th.case1_removed(np.array([21, 21, 12]), n, m), np.log(np.array([21, 21, 12]) / (n + m)))
    k = np.array([1, 2, 5])
    np.testing.assert_allclose(th.case2_learned(k), np.log(k))
    np.testing.assert_allclose(th.case2_lost(np.array([2, 3, 10]), k), np.log(np.array([2, 3, 10]) / k))
    np.testing.assert_allclose(th.case3_learned(m, k), np.log(m + k))
    np.testing.assert_allclose(th.case3_outlier(m, k), np.log((m + k) / k))
    out = th.removed_information(N, n)
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    grid = th.case3_outlier(np.arange(1, 4)[:, None], np.arange(1, 5)[None, :])
    assert grid.shape == (3, 4)
    np.testing.assert_allclose(grid, np.log((np.arange(1, 4)[:, None] + np.arange(1, 5)) / np.arange(1, 5)))


def test_vectorised_domain_error_if_any_element_out_of_bounds():
    with pytest.raises(ValueError, match="n <= N"):
        th.removed_information(np.array([21, 21]), np.array([3, 22]))


# ------------------------------------------------------------ measurement via fuse
def fused_entropy(N: int, on: list[int]) -> float:
    """Entropy (nats) of a pixel with uniform P over N classes fused with labels ``on``."""
    p = torch.full((1, N, 1, 1), 1.0 / N, dtype=torch.float64)
    lab = torch.zeros(N)
    lab[on] = 1
    fused = fuse(p, lab).view(-1).numpy()
    return float(entropy(fused))


@given(st.data(), st.integers(2, 30))
def test_measured_entropy_matches_equations(data, N):
    n = data.draw(st.integers(1, N), label="n")
    perm = data.draw(st.permutations(range(N)), label="perm")
    true = list(perm[:n])
    # Eq. 4: no label information (all on) -> log N
    assert fused_entropy(N, list(range(N))) == pytest.approx(th.self_information(N), abs=1e-9)
    # Eq. 5/6: valid information log n; N -> n removes log(N/n) nats
    h_n = fused_entropy(N, true)
    assert h_n == pytest.approx(th.valid_information(n), abs=1e-9)
    assert fused_entropy(N, list(range(N))) - h_n == pytest.approx(th.removed_information(N, n), abs=1e-9)
    if n < N:  # Case 1: m outliers
        m = data.draw(st.integers(1, N - n), label="m")
        h_nm = fused_entropy(N, true + list(perm[n : n + m]))
        assert h_nm == pytest.approx(th.case1_learned(n, m), abs=1e-9)
        assert math.log(N) - h_nm == pytest.approx(th.case1_removed(N, n, m), abs=1e-9)
    if n >= 2:  # Case 2: keep k < n
        k = data.draw(st.integers(1, n - 1), label="k")
        h_k = fused_entropy(N, true[:k])
        assert h_k == pytest.approx(th.case2_learned(k), abs=1e-9)
        assert h_n - h_k == pytest.approx(th.case2_lost(n, k), abs=1e-9)
        if n < N:  # Case 3: k kept + m outliers
            m = data.draw(st.integers(1, N - n), label="m3")
            h_mk = fused_entropy(N, true[:k] + list(perm[n : n + m]))
            assert h_mk == pytest.approx(th.case3_learned(m, k), abs=1e-9)
            assert h_mk - h_k == pytest.approx(th.case3_outlier(m, k), abs=1e-9)


# ------------------------------------------------------------ paper's relations
@st.composite
def N_n_m(draw):
    N = draw(st.integers(2, 500))
    n = draw(st.integers(1, N - 1))
    m = draw(st.integers(1, N - n))
    return N, n, m


@given(N_n_m())
def test_outliers_reduce_removed_information(args):
    N, n, m = args
    d_hat, d_m = th.removed_information(N, n), th.case1_removed(N, n, m)
    assert 0 <= d_m < d_hat
    assert d_hat - d_m == pytest.approx(math.log((n + m) / n), rel=1e-9, abs=1e-12)
    assert th.case1_learned(n, m) - th.valid_information(n) == pytest.approx(d_hat - d_m, abs=1e-9)
    assert d_m + th.case1_learned(n, m) == pytest.approx(th.self_information(N), abs=1e-9)


@given(st.integers(2, 500), st.data())
def test_lost_information_is_positive(n, data):
    k = data.draw(st.integers(1, n - 1))
    d_k = th.case2_lost(n, k)
    assert d_k > 0
    assert th.case2_learned(k) + d_k == pytest.approx(th.valid_information(n), abs=1e-9)


@given(st.integers(1, 100), st.integers(1, 100))
def test_case3_outlier_positive_and_consistent(m, k):
    assert th.case3_outlier(m, k) > 0
    assert th.case3_outlier(m, k) == pytest.approx(th.case3_learned(m, k) - th.case2_learned(k), abs=1e-9)


@given(st.integers(1, 1000))
def test_extreme_n(N):
    assert th.removed_information(N, 1) == pytest.approx(th.self_information(N), abs=1e-12)
    assert th.removed_information(N, N) == 0.0


@given(st.integers(1, 200), st.data(), st.integers(1, 64), st.integers(1, 64))
def test_image_total_is_pixels_times_per_pixel(N, data, w, h):
    n = data.draw(st.integers(1, N))
    total = th.image_removed_information(N, n, w, h)
    assert total == pytest.approx(w * h * th.removed_information(N, n), rel=1e-12, abs=1e-12)
    assert total >= 0


@given(N_n_m())
def test_removed_decreases_with_n(args):
    N, n, _ = args
    assume(n + 1 <= N)
    assert th.removed_information(N, n + 1) < th.removed_information(N, n)


# ------------------------------------------------------------ domain checks
@pytest.mark.parametrize(
    "call, bound",
    [
        (lambda: th.removed_information(21, 22), "n <= N"),
        (lambda: th.removed_information(21, 0), "1 <= n"),
        (lambda: th.image_removed_information(21, 22, 2, 2), "n <= N"),
        (lambda: th.image_removed_information(21, 3, 0, 2), "w >= 1"),
        (lambda: th.valid_information(0), "n >= 1"),
        (lambda: th.self_information(0), "N >= 1"),
        (lambda: th.case1_removed(21, 3, 19), "m <= N - n"),
        (lambda: th.case1_removed(21, 22, 1), "n <= N"),
        (lambda: th.case1_removed(21, 3, 0), "m >= 1"),
        (lambda: th.case1_removed(21, 0, 1), "n >= 1"),
        (lambda: th.case1_learned(3, 0), "m >= 1"),
        (lambda: th.case1_learned(0, 2), "n >= 1"),
        (lambda: th.case2_lost(3, 3), "k < n"),
        (lambda: th.case2_lost(3, 5), "k < n"),
        (lambda: th.case2_lost(3, 0), "k >= 1"),
        (lambda: th.case2_learned(0), "k >= 1"),
        (lambda: th.case3_learned(0, 2), "m >= 1"),
        (lambda: th.case3_learned(2, 0), "k >= 1"),
        (lambda: th.case3_outlier(0, 2), "m >= 1"),
        (lambda: th.case3_outlier(2, 0), "k >= 1"),
    ],
)
def test_out_of_domain_raises_naming_the_bound(call, bound):
    with pytest.raises(ValueError, match=bound):
        call()


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: th.self_information(2.5), "N"),
        (lambda: th.valid_information(1.5), "n"),
        (lambda: th.removed_information(21, 2.5), "n"),
        (lambda: th.removed_information(21.5, 2), "N"),
        (lambda: th.case1_removed(21, 2, 1.5), "m"),
        (lambda: th.case2_lost(5, 1.5), "k"),
        (lambda: th.case3_outlier(2.5, 1), "m"),
        (lambda: th.image_removed_information(21, 2, 2.5, 2), "w"),
        (lambda: th.removed_information(21, float("nan")), "n"),
        (lambda: th.removed_information(np.array([21, 21]), np.array([2.0, 2.5])), "n"),
    ],
)
def test_non_integer_raises(call, name):
    with pytest.raises(ValueError, match=rf"{name} must be an integer"):
        call()
