"""Tests for xqg_ray.report.plots: valid, deterministic PNGs and input checks."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest

from xqg_ray.report.plots import forest_plot, per_language_plot, robustness_plot, sweep_plot
from xqg_ray.evaluation.significance import compare

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_info(data: bytes) -> dict:
    """Walk the PNG chunks (checking each CRC); return width, height and text keys."""
    assert data.startswith(PNG_SIGNATURE)
    pos, info, texts = 8, {}, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(ctype + body) == crc
        if ctype == b"IHDR":
            info["width"], info["height"] = struct.unpack(">II", body[:8])
        if ctype in (b"tEXt", b"iTXt"):
            texts.append(body.split(b"\x00")[0].decode())
        pos += 12 + length
        if ctype == b"IEND":
            break
    assert pos == len(data)
    info["text_keys"] = texts
    return info


def pixels(data: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(data), format="png")


def comparison_rows():
    rng = np.random.default_rng(0)
    n = 60
    langs = ["fi", "ja", "te"] * (n // 3)
    qids = [f"q{i}" for i in range(n)]
    base = (rng.random(n) < 0.4).astype(float)
    better = np.maximum(base, (rng.random(n) < 0.3).astype(float))
    tables = {name: pa.table({"qid": qids, "lang": langs, "R@2kt": v, "MRR@10": v * 0.5})
              for name, v in (("baseline", base), ("xqg", better), ("same", base))}
    return compare(tables, "baseline", ["R@2kt", "MRR@10"], n_boot=200, seed=1, n_perm=999)


def test_forest_plot_png_deterministic_and_checked():
    rows = comparison_rows()
    png = forest_plot(rows, metric="R@2kt")
    info = png_info(png)
    assert info["width"] == 800 and info["height"] > 200
    assert "Software" not in info["text_keys"]
    assert forest_plot(rows, metric="R@2kt") == png  # same bytes for the same input
    assert forest_plot(rows, metric="MRR@10") != png
    # The significance markers change the picture: Holm vs permutation p-values.
    rows_sig = [dict(r, p_holm=0.0) for r in rows]
    assert not np.array_equal(pixels(forest_plot(rows_sig, metric="R@2kt")), pixels(png))
    # Rows without statistics keep a label and draw nothing.
    empty = [dict(r, mean_diff=None, ci95=[None, None]) if r["lang"] == "te" else r for r in rows]
    assert png_info(forest_plot(empty, metric="R@2kt"))["height"] == info["height"]
    with pytest.raises(ValueError, match="mix metrics"):
        forest_plot(rows)
    with pytest.raises(ValueError, match="ci95"):
        forest_plot([dict(rows[0], ci95=[0.1])], metric="R@2kt")
    with pytest.raises(ValueError, match="no comparison rows"):
        forest_plot(rows, metric="nDCG")


POINTS = [{"value": 0.40, "ci": [0.35, 0.45]}, {"value": 0.46, "ci": [0.41, 0.51]},
          {"value": 0.44, "ci": [0.39, 0.49]}, {"value": 0.30, "ci": [0.25, 0.35]}]


def test_sweep_plot_numeric_log_and_categorical():
    alphas = [0.0, 0.001, 0.01, 0.1, 1.0]
    series = {"R@2kt": POINTS + [0.2], "R@5kt": [0.5, 0.55, None, 0.5, 0.45]}
    png = sweep_plot(alphas, series, "alpha", "R@kt", log_x=True)
    assert png_info(png)["width"] == 750
    assert sweep_plot(alphas, series, "alpha", "R@kt", log_x=True) == png
    linear = sweep_plot(alphas, series, "alpha", "R@kt")
    assert linear != png and png_info(linear)["height"] == 450
    # Unsorted x gives the same lines as sorted x.
    order = [3, 0, 4, 1, 2]
    shuffled = {k: [v[i] for i in order] for k, v in series.items()}
    assert sweep_plot([alphas[i] for i in order], shuffled, "alpha", "R@kt", log_x=True) == png
    cat = sweep_plot(["sum", "mean"], {"xqg": POINTS[:2]}, "aggregation", "R@2kt")
    assert cat.startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="has 4 points for 5 x values"):
        sweep_plot(alphas, {"R@2kt": POINTS}, "alpha", "R@2kt")
    with pytest.raises(ValueError, match="log_x"):
        sweep_plot(["sum", "mean"], {"xqg": POINTS[:2]}, "aggregation", "R@2kt", log_x=True)
    with pytest.raises(ValueError, match="ci must be"):
        sweep_plot([1, 2], {"a": [{"value": 0.1, "ci": [0.0]}, 0.2]}, "n", "R@2kt")
    with pytest.raises(ValueError, match="no series"):
        sweep_plot([1, 2], {}, "n", "R@2kt")


def test_robustness_plot():
    conditions = ["clean", "typo10", "typo20", "word_order"]
    systems = {"baseline": POINTS, "xqg": [0.45, 0.42, None, {"value": 0.35, "ci": [0.3, 0.4]}]}
    png = robustness_plot(conditions, systems, "R@2kt")
    assert png_info(png)["height"] == 450 and robustness_plot(conditions, systems, "R@2kt") == png
    drops = {"baseline": [0.0, {"value": 0.05, "ci": [0.02, 0.08]}, 0.1, 0.02]}
    assert robustness_plot(conditions, drops, "R@2kt", drop=True) != \
        robustness_plot(conditions, drops, "R@2kt", drop=False)
    with pytest.raises(ValueError, match="has 3 points for 4 conditions"):
        robustness_plot(conditions, {"xqg": [0.1, 0.2, 0.3]}, "R@2kt")


def test_per_language_plot():
    langs = ["ru", "fi", "ja", "ar", "ko", "bn", "te"]  # resource order, not alphabetical
    systems = {"baseline": [0.5, 0.45, 0.4, 0.38, 0.35, 0.3, None],
               "xqg": [{"value": v, "ci": [v - 0.04, v + 0.04]} for v in (0.55, 0.5, 0.43, 0.4, 0.4, 0.37, 0.3)]}
    png = per_language_plot(langs, systems, "R@2kt")
    assert png_info(png)["width"] == 930 and per_language_plot(langs, systems, "R@2kt") == png
    reordered = per_language_plot(langs[::-1], {k: v[::-1] for k, v in systems.items()}, "R@2kt")
    assert reordered != png  # the order is the caller's
    with pytest.raises(ValueError, match="has 6 points for 7 languages"):
        per_language_plot(langs, {"baseline": systems["baseline"][:6]}, "R@2kt")
    with pytest.raises(ValueError, match="repeat"):
        per_language_plot(["fi", "fi"], {"a": [0.1, 0.2]}, "R@2kt")
    with pytest.raises(ValueError, match="expected a number"):
        per_language_plot(["fi"], {"a": [{"value": "high"}]}, "R@2kt")
