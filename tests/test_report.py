"""Tests for xqg_ray.report: report.md content (markdown, cells), the bar charts (plots) and write_report."""

from __future__ import annotations

import copy
import hashlib
import io
import json

import pytest

import pyarrow as pa

from xqg_ray.evaluation.metrics import metric_names
from xqg_ray.evaluation.significance import compare
from xqg_ray.report.experiments import experiment_charts, plotted_metrics, shown_metrics
from xqg_ray.report.markdown import render_markdown
from xqg_ray.report.plots import bar_chart_figure, bar_chart_png, bar_values
from xqg_ray.report.write import charts_key, write_report

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


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_bar_chart_png_bytes():
    png = bar_chart_png(sample_metrics(), "R@2kt")
    # 3 groups x 2 systems: max(6, 0.6 * 3 * 2 + 2) = 6 inches by 4.5, at 100 dpi.
    assert png_size(png) == (600, 450)
    assert bar_chart_png(sample_metrics(), "R@2kt") == png  # the same bytes for the same input
    assert bar_chart_png(sample_metrics(), "R@5kt") != png


def test_bar_values_missing_value_gets_no_bar():
    # R@5kt is None for mdpr/ja; Recall@1 has no per-language values at all.
    assert bar_values(sample_metrics(), "R@5kt") == (
        ["fi", "ja", "macro"], {"mdpr": [0.702, None, 0.702], "xqg-e5": [0.8, 0.66, 0.73]})
    assert bar_values(sample_metrics(), "Recall@1") == (
        ["fi", "ja", "macro"], {"mdpr": [None, None, 0.1], "xqg-e5": [None, None, 0.2]})
    assert bar_values({"systems": {}}, "R@2kt") == (["macro"], {})


def test_bar_chart_figure_hides_missing_bars():
    ax = bar_chart_figure(sample_metrics(), "R@5kt").axes[0]
    mdpr, xqg = ax.containers
    assert [p.get_height() for p in mdpr.patches] == [0.702, 0.0, 0.702]
    assert [p.get_visible() for p in mdpr.patches] == [True, False, True]  # mdpr/ja: no bar, not a 0
    assert [p.get_height() for p in xqg.patches] == [0.8, 0.66, 0.73]
    assert [p.get_visible() for p in xqg.patches] == [True, True, True]
    # Side by side around each group: width 0.8 / 2 systems, centres at g -+ 0.2.
    assert [p.get_x() + p.get_width() / 2 for p in mdpr.patches] == pytest.approx([-0.2, 0.8, 1.8])
    assert [p.get_x() + p.get_width() / 2 for p in xqg.patches] == pytest.approx([0.2, 1.2, 2.2])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fi", "ja", "macro"]
    assert ax.get_title() == "R@5kt" and ax.get_ylim() == (0.0, 1.0)
    recall = bar_chart_figure(sample_metrics(), "Recall@1").axes[0]
    assert [[p.get_visible() for p in c.patches] for c in recall.containers] == [[False, False, True]] * 2


def test_bar_chart_is_a_readable_image():
    # Decode with matplotlib's own reader so a truncated PNG would fail.
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(bar_chart_png(sample_metrics())), format="png")
    assert img.shape == (450, 600, 4)


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


# ---------------------------------------------------------------- metric names follow eval.mrr_k


class FakeStorage:
    """In memory, with the order of every write (``writes``)."""

    def __init__(self):
        self.files = {}
        self.writes = []

    def exists(self, uri):
        return uri in self.files

    def read_bytes(self, uri):
        return self.files[uri]

    def read_json(self, uri):
        return json.loads(self.files[uri])

    def write_bytes(self, uri, data):
        self.files[uri] = data
        self.writes.append(uri)

    def write_text(self, uri, text):
        self.write_bytes(uri, text)

    def write_json(self, uri, obj):
        self.write_bytes(uri, json.dumps(obj))


def mrr20_result():
    """A run with eval.mrr_k=20: its metrics, comparisons and a languages experiment."""
    names = metric_names(mrr_k=20)
    qids, langs = ["a", "b", "c", "d"], ["fi", "fi", "ja", "ja"]

    def tab(vals):
        return pa.table({"qid": qids, "lang": langs, **{m: pa.array(vals, pa.float64()) for m in names}})

    rows = compare({"baseline": tab([0.0, 1.0, 0.0, 0.5]), "xqg": tab([1.0, 1.0, 0.5, 0.5])}, "baseline",
                   ["R@2kt", "MRR@20"], n_boot=50, seed=0, n_perm=99)
    block = {m: 0.5 for m in names}
    return {
        "metric_names": names,
        "systems": {s: {"per_language": {"fi": {**block, "n": 2}, "ja": {**block, "n": 2}}, "macro": {**block, "n": 4}}
                    for s in ("baseline", "xqg")},
        "comparisons": rows,
        "experiments": {"languages": {
            "order": ["fi", "ja"], "resource_gib": {"fi": 54.3, "ja": 69.3}, "groups": {}, "ordered_by": "eval.language_order",
            "values": {"baseline": {m: {lang: {"mean": 0.5, "ci95": [0.4, 0.6]} for lang in ("fi", "ja")} for m in names}}}},
    }


def test_headline_follows_mrr_k():
    result = mrr20_result()
    assert result["metric_names"] == ["R@2kt", "R@5kt", "Recall@1", "Recall@5", "Recall@20", "MRR@20"]
    assert shown_metrics(result) == ["R@2kt", "R@5kt", "MRR@20"]
    assert plotted_metrics(result) == ["R@2kt", "MRR@20"]
    assert plotted_metrics({}) == ["R@2kt", "MRR@10"]  # no metric_names: the default names
    charts = experiment_charts(result)
    assert charts["keys"] == {"forest": ["plots/forest_R_at_2kt.png", "plots/forest_MRR_at_20.png"],
                              "languages": ["plots/languages_R_at_2kt.png", "plots/languages_MRR_at_20.png"]}
    md = render_markdown(result, {}, charts["keys"])
    assert "## MRR@20 per language (%)" in md and "MRR@10" not in md
    assert "MRR@20:\n\n| system | fi (54.3 GiB) | ja (69.3 GiB) |\n|---|---|---|\n| baseline | 50.0 [40.0, 60.0] | 50.0 [40.0, 60.0] |" in md
    assert "![forest](plots/forest_MRR_at_20.png)" in md


def test_write_report_writes_charts_and_report():
    result = mrr20_result()
    storage = FakeStorage()
    write_report(storage, "/runs/r1", result)
    expected_charts = {"R@2kt": "plots/R_at_2kt.png", "R@5kt": "plots/R_at_5kt.png", "MRR@20": "plots/MRR_at_20.png"}
    keys = {"forest": ["plots/forest_R_at_2kt.png", "plots/forest_MRR_at_20.png"],
            "languages": ["plots/languages_R_at_2kt.png", "plots/languages_MRR_at_20.png"]}
    assert result["plots"] == {"charts": expected_charts, "experiments": keys}
    pngs = list(expected_charts.values()) + ["plots/forest_R_at_2kt.png", "plots/languages_R_at_2kt.png", "plots/forest_MRR_at_20.png",
                                             "plots/languages_MRR_at_20.png"]
    # The PNGs, then the record of what they show, then report.md.
    assert storage.writes == ["/runs/r1/" + f for f in pngs + ["plots/charts.json", "report.md"]]
    record = json.loads(storage.files["/runs/r1/plots/charts.json"])
    assert record == {"key": charts_key(result), "plots": {"charts": expected_charts, "experiments": keys},
                      "sha256": {f: hashlib.sha256(storage.files["/runs/r1/" + f]).hexdigest() for f in pngs}}
    for metric, fname in expected_charts.items():
        assert storage.files[f"/runs/r1/{fname}"] == bar_chart_png(result, metric)
    assert storage.files["/runs/r1/plots/forest_MRR_at_20.png"] == experiment_charts(result)["files"]["plots/forest_MRR_at_20.png"]
    assert storage.files["/runs/r1/report.md"] == render_markdown(result, expected_charts, keys)
    assert "![MRR@20](plots/MRR_at_20.png)" in storage.files["/runs/r1/report.md"]


def test_a_rerun_with_the_same_results_keeps_the_charts():
    """Only the stage timings changed: the charts are kept (not one PNG written), report.md is written again and
    names them, result["plots"] is the first run's."""
    first = mrr20_result()
    first["stages"] = {"search": {"rows": 4, "seconds": 1.5}}
    storage = FakeStorage()
    write_report(storage, "/runs/r1", first)
    drawn = dict(storage.files)
    storage.writes.clear()
    again = copy.deepcopy({k: v for k, v in first.items() if k != "plots"})
    again["stages"] = {"search": {"rows": 4, "seconds": 9.25}}
    write_report(storage, "/runs/r1", again)
    assert storage.writes == ["/runs/r1/report.md"]
    assert again["plots"] == first["plots"]
    assert {f: b for f, b in storage.files.items() if f != "/runs/r1/report.md"} == {f: b for f, b in drawn.items() if f != "/runs/r1/report.md"}
    assert "| search | 4 | 9.2 |" in storage.files["/runs/r1/report.md"] and "| search | 4 | 1.5 |" in drawn["/runs/r1/report.md"]


def test_changed_results_or_a_damaged_chart_draw_every_chart_again():
    result = mrr20_result()
    storage = FakeStorage()
    write_report(storage, "/runs/r1", result)
    pngs = sorted(f for f in storage.files if f.endswith(".png"))
    assert len(pngs) == 7
    # One value changed: every chart is drawn again, and the bar chart of that metric differs.
    changed = copy.deepcopy({k: v for k, v in result.items() if k != "plots"})
    changed["systems"]["xqg"]["macro"]["MRR@20"] = 0.9
    before = storage.files["/runs/r1/plots/MRR_at_20.png"]
    storage.writes.clear()
    write_report(storage, "/runs/r1", changed)
    assert sorted(storage.writes) == sorted(pngs + ["/runs/r1/plots/charts.json", "/runs/r1/report.md"])
    assert storage.files["/runs/r1/plots/MRR_at_20.png"] != before
    assert json.loads(storage.files["/runs/r1/plots/charts.json"])["key"] == charts_key(changed) != charts_key(result)
    # The same results again, but one PNG damaged (or deleted): its sha256 no longer matches, so all are drawn.
    for damage in (lambda f: storage.files.__setitem__(f, b"x"), storage.files.pop):
        damage("/runs/r1/plots/languages_R_at_2kt.png")
        storage.writes.clear()
        write_report(storage, "/runs/r1", copy.deepcopy({k: v for k, v in changed.items() if k != "plots"}))
        assert sorted(storage.writes) == sorted(pngs + ["/runs/r1/plots/charts.json", "/runs/r1/report.md"])
        assert storage.files["/runs/r1/plots/languages_R_at_2kt.png"] == experiment_charts(changed)["files"]["plots/languages_R_at_2kt.png"]


def test_each_chart_is_written_as_soon_as_it_is_drawn(monkeypatch):
    """A run killed while the report is drawn leaves the charts drawn so far (the kill-point test stops a driver at
    the first PNG and needs the run unfinished then): the bar charts are on disk before the experiment charts are
    drawn, and the record comes after every PNG."""
    import xqg_ray.report.write as write_module

    storage = FakeStorage()
    seen = []

    def experiment_charts(result):
        seen.append(sorted(storage.files))
        return real(result)

    real = write_module.experiment_charts
    monkeypatch.setattr(write_module, "experiment_charts", experiment_charts)
    write_report(storage, "/runs/r1", mrr20_result())
    assert seen == [["/runs/r1/plots/MRR_at_20.png", "/runs/r1/plots/R_at_2kt.png", "/runs/r1/plots/R_at_5kt.png"]]
    pngs = [w for w in storage.writes if w.endswith(".png")]
    assert len(pngs) == 7 and storage.writes[:8] == pngs + ["/runs/r1/plots/charts.json"]
