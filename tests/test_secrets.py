"""Secrets: masked in the saved config.yaml, in any text passed through ``redact``, and in the CLI's error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xqg_ray.config import load_config, redact, to_yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "conf" / "smoke.yaml")
S = [f"SENTINEL{i}x" for i in range(14)]


def test_no_secret_reaches_the_saved_config(tmp_path):
    raw = yaml.safe_load(Path(SMOKE).read_text())
    raw["storage"] = {
        "access_key": S[0], "secret_key": S[1], "session_token": S[2],
        "s3_endpoint": f"http://minio:{S[3]}@127.0.0.1:9000/?X-Amz-Security-Token={S[4]}&X-Amz-Signature={S[5]}",
    }
    raw["benchmark"].update(
        kind="files", source=f"https://{S[6]}@example.org/datasets",
        corpus=f"https://example.org/c.jsonl?se=2026&sig={S[7]}&X-Amz-Credential={S[8]}",
        queries=f"https://example.org/q.jsonl?token={S[9]}&password={S[10]}")
    raw["generators"]["human"] = {"kind": "provided", "path": f"https://example.org/q.parquet?secret={S[11]}&key={S[12]}"}
    raw["encoder"]["model"] = f"https://u:{S[13]}@example.org/model"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(str(path))
    saved = to_yaml(cfg)
    assert [s for s in S if s in saved] == []
    back = yaml.safe_load(saved)
    assert back["storage"] == {
        "access_key": "***", "secret_key": "***", "session_token": "***", "s3_region": "us-east-1",
        "s3_endpoint": "http://***@127.0.0.1:9000/?X-Amz-Security-Token=***&X-Amz-Signature=***",
    }
    assert back["benchmark"]["corpus"] == "https://example.org/c.jsonl?se=2026&sig=***&X-Amz-Credential=***"
    assert back["benchmark"]["source"] == "https://***@example.org/datasets"
    assert cfg.storage.secret_key == S[1] and cfg.benchmark.queries.endswith(S[10])  # the run keeps the real values


@pytest.mark.parametrize("text, expected", [
    ("GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token=SENTINEL1x&X-Amz-Signature=SENTINEL2x (403)",
     "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token=***&X-Amz-Signature=*** (403)"),
    ("override storage.secret_key=SENTINEL3x refused", "override storage.secret_key=*** refused"),
    ("{'access_key': 'SENTINEL4x', \"session_token\": \"SENTINEL5x\"}", "{'access_key': '***', \"session_token\": \"***\"}"),
    ("cannot open s3://AKIA:SENTINEL6x@bucket/x.parquet", "cannot open s3://***@bucket/x.parquet"),
    ("a?sig=SENTINEL7x&password=SENTINEL8x;api_key=SENTINEL9x", "a?sig=***&password=***;api_key=***"),
    ("secret: SENTINEL10x", "secret: ***"),
    # Nothing else is touched.
    ("index.num_shards=4; encoder.model: 'tiny:tiny-bert' at http://127.0.0.1:9000/a?x=1",
     "index.num_shards=4; encoder.model: 'tiny:tiny-bert' at http://127.0.0.1:9000/a?x=1"),
])
def test_redact(text, expected):
    assert redact(text) == expected


def test_the_cli_error_line_is_redacted(tmp_path, monkeypatch, capsys):
    import xqg_ray.runtime.cluster as cluster
    from xqg_ray.cli import main

    def never(*a, **k):
        raise AssertionError("Ray started before the preflight refused the config")

    monkeypatch.setattr(cluster, "init_ray", never)
    rc = main(["run", SMOKE, f"output_dir={tmp_path / 'run'}", "encoder.model=https://u:SENTINEL1x@example.org/m?token=SENTINEL2x"])
    err = capsys.readouterr().err
    assert rc == 2 and "SENTINEL" not in err
    assert "encoder.model: 'https://***@example.org/m?token=***' is neither a local model directory nor a Hugging Face hub id" in err
