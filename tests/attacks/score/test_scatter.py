"""Adaptive Square's moves above its own window and its dither: a dithered candidate stays on
the 8-bit grid inside the ball, snaps back to the vertices it came from, and shares fewer
Blacklight hashes with the image it came from than the detector's threshold; the bandit
prefers the move whose candidates are kept."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bbattack.attacks.score._scatter import choose, dither, snap, tally
from bbattack.defenses.blacklight import fingerprint
from bbattack.images import quantize
from support import FloatArray


def _vertices(
    seed: int, shape: tuple[int, ...] = (2, 3, 16, 16)
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    x0 = (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    eps = np.full(shape[0], 0.05)
    hi, lo = quantize(x0 + 0.05, x0, eps), quantize(x0 - 0.05, x0, eps)
    v = np.where(rng.random(shape) < 0.5, hi, lo).astype(np.float32)
    return x0, hi, lo, v, rng.random((shape[0], int(np.prod(shape[1:]))))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), units=st.integers(1, 8))
def test_a_dither_stays_on_the_grid_inside_the_ball_and_snaps_back(seed: int, units: int) -> None:
    x0, hi, lo, v, u = _vertices(seed)
    out = dither(v, x0, hi, lo, u, np.full(len(v), units))
    assert np.array_equal(quantize(out, x0, np.full(len(v), 0.05)), out)  # on the grid
    assert np.all((out >= lo) & (out <= hi))
    assert np.array_equal(snap(out, x0, hi, lo), v)
    assert np.array_equal(snap(x0, x0, hi, lo), x0)  # a clean iterate stays clean
    moved = np.rint(np.abs(out.astype(np.float64) - v) * 255)
    assert moved.max() <= units
    assert 0.3 < (moved > 0).mean() < 0.7  # about half the values, where the ball allows


def test_a_two_level_dither_leaves_fewer_blacklight_hashes_than_its_threshold() -> None:
    x0, hi, lo, v, u = _vertices(0, (1, 3, 224, 224))
    base = fingerprint(v[0], step=50, window=50, hash="mix64")
    one = dither(v, x0, hi, lo, u, np.array([2]))[0]
    assert (
        len(np.intersect1d(base, fingerprint(one, step=50, window=50, hash="mix64"))) < 25
    )  # T = 25 of S = 50


def test_the_bandit_prefers_the_move_that_is_kept() -> None:
    tries, kept = np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)
    rows = np.arange(2)
    assert choose("auto", tries, kept, rows).all()  # a tie scatters
    for _ in range(40):  # image 0: one window kept, scattered not; image 1: the reverse
        tally(tries, kept, rows, np.array([False, True]), np.array([True, True]))
        tally(tries, kept, rows, np.array([True, False]), np.array([False, False]))
    assert choose("auto", tries, kept, rows).tolist() == [False, True]
    assert choose("off", tries, kept, rows).tolist() == [False, False]
    assert choose("on", tries, kept, rows).tolist() == [True, True]


def test_a_coarse_dither_shifts_each_block_one_way_per_channel() -> None:
    x0, hi, lo, v, _ = _vertices(1, (2, 3, 14, 14))
    grid, ch = 7, 3
    u = np.random.default_rng(1).random((2, ch * 14 * 14 + ch * grid * grid))
    fine = dither(v, x0, hi, lo, u, np.array([2, 2]), grid)
    coarse = dither(v, x0, hi, lo, u, np.array([4, 4]), grid)
    assert np.array_equal(fine, dither(v, x0, hi, lo, u, np.array([2, 2])))  # random below 3
    moved = np.sign(np.rint((coarse.astype(np.float64) - v) * 255))  # (2, 3, 14, 14)
    blocks = moved.reshape(2, ch, grid, 2, grid, 2)
    for n, c, i, j in np.ndindex(2, ch, grid, grid):
        ways = set(blocks[n, c, i, :, j, :].ravel().tolist()) - {0.0}
        assert len(ways) <= 1  # one direction per block and channel
    assert 0.1 < (moved != 0).mean() < 0.4  # about a quarter of the values
