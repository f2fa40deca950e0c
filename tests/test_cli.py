"""The command line: prepare writes a benchmark; config and data errors exit 2 with a message."""

import json
from pathlib import Path

from xqg_ray.cli import main

SMOKE = str(Path(__file__).resolve().parents[1] / "conf" / "smoke.yaml")


def test_prepare_xquad(tmp_path, shared_datasets, capsys):
    out = tmp_path / "bench"
    assert main(["prepare", "xquad", "--source", str(shared_datasets), "--out", str(out), "--languages", "de,zh"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["passages"] == 2067
    assert manifest["counts"]["queries"] == {"de": 1190, "zh": 1190}
    assert '"corpus_hash"' in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["run", SMOKE, "index.num_shard=3"]) == 2
    assert "num_shard" in capsys.readouterr().err
    assert main(["run", SMOKE, f"output_dir={tmp_path}", "benchmark.source=/nonexistent"]) == 2
    assert "no xquad/ directory" in capsys.readouterr().err
