"""Holm-Bonferroni (xqg_ray.evaluation.multitest): hand examples, and statsmodels as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from xqg_ray.evaluation.multitest import holm


def test_holm_known_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_monotone_capped_and_ordered():
    # Sorted: 0.01*2 = 0.02, then 0.04*1 = 0.04.
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    # Sorted 0.001, 0.02, 0.03, 0.5 -> 0.001*4, 0.02*3, 0.03*2, 0.5*1.
    assert holm([0.03, 0.001, 0.5, 0.02]) == pytest.approx([0.06, 0.004, 0.5, 0.06])
    # Running max: 0.01*4 = 0.04, 0.02*3 = 0.06, 0.04*2 = 0.08, 0.045*1 -> 0.08 (not 0.045).
    assert holm([0.045, 0.01, 0.04, 0.02]) == pytest.approx([0.08, 0.04, 0.08, 0.06])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


def test_holm_matches_statsmodels_and_passes_none_through():
    p = [0.002, 0.2, 0.011, 0.04, 0.03, 0.5]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    # Family of three: 0.01*3, 0.04*2 -> 0.08, 0.03*... sorted 0.01, 0.03, 0.04.
    assert holm([0.01, None, 0.04, 0.03, None]) == pytest.approx([0.03, None, 0.06, 0.06, None])
    assert holm([None, None]) == [None, None]
    with pytest.raises(ValueError):
        holm([1.5])


@pytest.mark.parametrize("seed", range(10))
def test_holm_against_statsmodels_oracle(seed, monkeypatch):
    """statsmodels' multipletests(method="holm") is the oracle: every family size 1..40,
    ties, exact 0 and 1, and None (untested) entries left out of the family."""
    import gc

    # statsmodels runs a full gc.collect() per call (~10 ms here): not what is tested.
    monkeypatch.setattr(gc, "collect", lambda *a, **k: 0)
    rng = np.random.default_rng(seed)
    for m in range(1, 41):
        p = rng.random(m) ** rng.uniform(0.5, 4)  # skewed towards small p
        p[rng.random(m) < 0.15] = 0.0
        p[rng.random(m) < 0.1] = 1.0
        if m > 2:  # ties
            p[rng.integers(0, m)] = p[rng.integers(0, m)]
        values = [None if rng.random() < 0.2 else float(v) for v in p]
        tested = [v for v in values if v is not None]
        got = holm(values)
        assert [v is None for v in got] == [v is None for v in values]
        if not tested:
            continue
        oracle = iter(np.minimum(1.0, multipletests(tested, method="holm")[1]).tolist())
        for g, v in zip(got, values):
            if v is not None:
                assert g == next(oracle)  # exact, not approximately


def test_holm_needs_neither_statsmodels_nor_gc():
    """Holm is numpy: no statsmodels (nor pandas) import, and gc.collect untouched while it runs
    (the statsmodels-backed version swapped it for the whole process)."""
    import subprocess
    import sys

    code = ("import gc, sys\n"
            "from xqg_ray.evaluation.multitest import holm\n"
            "real = gc.collect\n"
            "seen = []\n"
            "sys.setprofile(lambda frame, event, arg: seen.append(gc.collect is real))\n"
            "out = holm([0.01, 0.04, 0.03])\n"
            "sys.setprofile(None)\n"
            "assert out == [0.03, 0.06, 0.06] or max(abs(a - b) for a, b in zip(out, [0.03, 0.06, 0.06])) < 1e-15, out\n"
            "assert all(seen), 'gc.collect was replaced'\n"
            "assert 'statsmodels' not in sys.modules and 'pandas' not in sys.modules, 'statsmodels imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
