"""Tests for xqg_ray.report: report.md content (markdown, cells), the bar charts (plots) and write_report."""

from __future__ import annotations

import io

import pytest

from xqg_ray.report.markdown import render_markdown
from xqg_ray.report.plots import bar_chart_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_metrics():
    return {
        "benchmark": "xor-retrieve-dev",
        "tokenizer": "nltk.word_tokenize(preserve_line=True)",
        "baseline": "mdpr",
        "systems": {
            "mdpr": {
                "per_language": {
                    "fi": {"R@2kt": 0.613, "R@5kt": 0.702, "MRR@10": 0.25, "n": 100, "n_R@2kt": 98},
                    "ja": {"R@2kt": 0.4, "R@5kt": None, "MRR@10": 0.125, "n": 50, "n_R@2kt": 50},
                },
                "macro": {"R@2kt": 0.5065, "R@5kt": 0.702, "Recall@1": 0.1, "MRR@10": 0.1875, "n": 150},
            },
            "xqg-e5": {
                "per_language": {
                    "fi": {"R@2kt": 0.7, "R@5kt": 0.8, "MRR@10": 0.3, "n": 100, "n_R@2kt": 98},
                    "ja": {"R@2kt": 0.55, "R@5kt": 0.66, "MRR@10": 0.2, "n": 50, "n_R@2kt": 50},
                },
                "macro": {"R@2kt": 0.625, "R@5kt": 0.73, "Recall@1": 0.2, "MRR@10": 0.25, "n": 150},
            },
        },
        "comparisons": [
            {"baseline": "mdpr", "system": "xqg-e5", "metric": "R@2kt", "lang": "fi", "n": 98,
             "mean_baseline": 0.613, "mean_system": 0.7, "mean_diff": 0.087,
             "ci95": [0.02, 0.15], "p_value": 0.004, "p_holm": 0.008},
            {"baseline": "mdpr", "system": "xqg-e5", "metric": "R@2kt", "lang": "ja", "n": 50,
             "mean_baseline": 0.4, "mean_system": 0.55, "mean_diff": 0.15,
             "ci95": [-0.01, 0.3], "p_value": 0.03, "p_holm": 0.06},
            {"baseline": "mdpr", "system": "xqg-e5", "metric": "R@2kt", "lang": "all", "n": 148,
             "mean_baseline": 0.54, "mean_system": 0.65, "mean_diff": 0.11,
             "ci95": [0.05, 0.17], "p_value": 0.0004, "p_holm": 0.0004},
            {"baseline": "mdpr", "system": "xqg-e5", "metric": "R@5kt", "lang": "te", "n": 0,
             "mean_baseline": None, "mean_system": None, "mean_diff": None,
             "ci95": [None, None], "p_value": None, "p_holm": None},
        ],
        "stages": {
            "encode_passages": {"rows": 123456, "seconds": 61.25, "rows_per_s": 2015.6},
            "search": {"rows": 150, "seconds": None, "rows_per_s": None},
        },
    }


def test_bar_chart_png_bytes():
    png = bar_chart_png(sample_metrics(), "R@2kt")
    assert isinstance(png, bytes)
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 1000


def test_bar_chart_handles_missing_values_and_metric():
    # R@5kt is None for mdpr/ja; Recall@1 has no per-language values at all.
    assert bar_chart_png(sample_metrics(), "R@5kt").startswith(PNG_SIGNATURE)
    assert bar_chart_png(sample_metrics(), "Recall@1").startswith(PNG_SIGNATURE)


def test_bar_chart_is_a_readable_image():
    # Decode with matplotlib's own reader so a truncated PNG would fail.
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(bar_chart_png(sample_metrics())), format="png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_render_markdown_content():
    md = render_markdown(sample_metrics(), {"R@2kt": "chart_R@2kt.png", "R@5kt": "chart_R@5kt.png"})
    assert md.startswith("# ")
    # Run facts.
    assert "xor-retrieve-dev" in md
    assert "nltk.word_tokenize(preserve_line=True)" in md
    # Systems and macro values as percentages with one decimal.
    assert "mdpr" in md and "xqg-e5" in md
    macro_line = next(line for line in md.splitlines() if line.startswith("| xqg-e5 | 62.5 |"))
    assert "| 73.0 |" in macro_line and "| 20.0 |" in macro_line and "| 25.0 |" in macro_line
    assert "| mdpr | 50.6 |" in md or "| mdpr | 50.7 |" in md  # 50.65 rounds either way in binary
    # Per-language tables, with None rendered as an en dash.
    assert "## R@2kt per language" in md
    assert "## R@5kt per language" in md
    assert "## MRR@10 per language" in md
    assert "| fi | 98 | 61.3 | 70.0 |" in md
    assert "| ja | 50 | 40.0 | 55.0 |" in md
    assert "| ja | 50 | – | 66.0 |" in md
    # Comparisons: diff in points, CI, p-values, and the significance marker.
    assert "| xqg-e5 | mdpr | R@2kt | fi | 98 | +8.7 | [+2.0, +15.0] | 0.004 | 0.008 | * |" in md
    assert "| xqg-e5 | mdpr | R@2kt | ja | 50 | +15.0 | [-1.0, +30.0] | 0.030 | 0.060 |  |" in md  # p < 0.05 but p_holm is not
    assert "| xqg-e5 | mdpr | R@2kt | all | 148 | +11.0 | [+5.0, +17.0] | <0.001 | <0.001 | * |" in md
    assert "| xqg-e5 | mdpr | R@5kt | te | 0 | – | – | – | – |  |" in md
    # The pooled row comes first in its group.
    assert md.index("| R@2kt | all |") < md.index("| R@2kt | fi |")
    # Charts and stages.
    assert "![R@2kt](chart_R@2kt.png)" in md
    assert "![R@5kt](chart_R@5kt.png)" in md
    assert "| encode_passages | 123,456 | 61.2 | 2,015.6 |" in md or \
        "| encode_passages | 123,456 | 61.3 | 2,015.6 |" in md
    assert "| search | 150 | – | – |" in md
    assert "None" not in md and "nan" not in md


def test_render_markdown_minimal():
    md = render_markdown({"systems": {}}, {})
    assert md.startswith("# ")
    assert "Comparisons" not in md and "stages" not in md.lower()


def test_pipe_in_system_name_is_escaped():
    m = sample_metrics()
    m["systems"]["a|b"] = m["systems"].pop("xqg-e5")
    md = render_markdown(m, {})
    assert "a\\|b" in md
    with pytest.raises(StopIteration):
        next(line for line in md.splitlines() if "| a|b |" in line)


def test_system_definitions_section():
    from xqg_ray.report.markdown import render_markdown

    metrics = {
        "systems": {"baseline": {"per_language": {}, "macro": {}}},
        "indexes": {
            "baseline": {"generator": None, "aggregation": None, "alpha": 0.0, "query_counts": None},
            "xqg": {"generator": "gemma", "aggregation": "sum", "alpha": 0.01, "query_counts": {"min": 3, "max": 3, "zero": 0, "passages": 9}},
        },
    }
    md = render_markdown(metrics, {})
    assert "## Systems" in md
    assert "| xqg | – | gemma | sum | 0.01 | all | 3–3 | 0 |" in md
    assert "| baseline | – | – (E(p) only) |" in md
