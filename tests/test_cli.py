"""The command line: prepare writes a benchmark; config and data errors exit 2 with a message."""

import json
from pathlib import Path

from xqg_ray.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml")


def test_prepare_xquad(tmp_path, shared_datasets, ray_local, capsys):
    out = tmp_path / "bench"
    args = ["prepare", SMOKE, f"output_dir={out}", f"benchmark.source={shared_datasets}", "benchmark.corpus_limit=0",
            "benchmark.max_queries_per_language=0", "ray.progress=false"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["passages"] == 2067
    assert printed["counts"]["queries"] == {"de": 1190, "zh": 1190}
    assert printed["changes"] == {"added": 2067, "changed": 0, "removed": 0, "unchanged": 0} and printed["parent_snapshot"] is None
    ptr = json.loads((out / "benchmark" / "current.json").read_text())
    assert json.loads((out / ptr["manifest"]).read_text())["snapshot"] == printed["snapshot"]


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["run", SMOKE, "index.num_shard=3"]) == 2
    assert "num_shard" in capsys.readouterr().err
    assert main(["run", SMOKE, f"output_dir={tmp_path}", "benchmark.source=/nonexistent"]) == 2
    assert "no xquad/ directory" in capsys.readouterr().err
