"""Finding and parsing the XQuAD language files and the SQuAD v1.1 dev set (local, s3:// or URLs)."""

from __future__ import annotations

import json
import posixpath
import re
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .common import BenchmarkError
from ..store.storage import Storage, join

XQUAD_LANGUAGES: Tuple[str, ...] = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
XQUAD_URL_ROOT = "https://github.com/google-deepmind/xquad/raw/master"
SQUAD_DEV_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
_XQUAD_NAME = re.compile(r"^xquad\.([A-Za-z]{2,3}(?:-[A-Za-z]+)?)\.json$")

# -- reading sources -----------------------------------------------------------
def _is_url(uri: str) -> bool:
    return uri.startswith("http://") or uri.startswith("https://")


def fetch_url(url: str, timeout: float = 120.0) -> bytes:
    """Download one file; the error says how to work offline instead."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (http(s) only, checked)
            return r.read()
    except Exception as e:  # URLError, HTTPError, timeouts: one actionable message
        raise BenchmarkError(
            f"could not download {url}: {e}. Download the files by hand and set "
            "benchmark.source to a directory holding xquad/ and squad-v1.1-dev/"
        ) from e


def _read_bytes(uri: str, storage: Storage) -> bytes:
    return fetch_url(uri) if _is_url(uri) else storage.read_bytes(uri)


@dataclass
class XQuADFiles:
    """Where the XQuAD language files and the SQuAD dev file(s) are."""

    xquad: Dict[str, str]  # lang -> URI (local/s3 path or URL)
    squad: List[str]  # one dev-v1.1.json, or part1 + part2 in that order


def xquad_files(source: str, storage: Optional[Storage] = None, languages: Sequence[str] = ()) -> XQuADFiles:
    """Map ``benchmark.source`` to the files to read.

    A URL is the root of the XQuAD repository's raw files (a bare
    ``https://github.com/OWNER/REPO`` gets ``/raw/master`` appended); SQuAD comes
    from :data:`SQUAD_DEV_URL`.  Files cannot be listed over HTTP, so the
    language list is ``languages`` (+ "en" for the answers) or all of
    :data:`XQUAD_LANGUAGES`.  A local/S3 directory is listed instead.
    """
    if _is_url(source):
        root = source.rstrip("/")
        if re.fullmatch(r"https://github\.com/[^/]+/[^/]+", root):
            root += "/raw/master"
        langs = sorted(set(languages) | {"en"}) if languages else list(XQUAD_LANGUAGES)
        return XQuADFiles({lang: f"{root}/xquad.{lang}.json" for lang in langs}, [SQUAD_DEV_URL])
    storage = storage or Storage()
    xdir = join(source, "xquad")
    if not storage.is_dir(xdir):
        raise BenchmarkError(f"no xquad/ directory under benchmark.source={source!r} ({xdir})")
    found: Dict[str, str] = {}
    for uri in storage.list_files(xdir, ".json"):
        m = _XQUAD_NAME.match(posixpath.basename(uri.replace("\\", "/")))
        if m:
            found[m.group(1)] = uri
    if not found:
        raise BenchmarkError(f"no xquad.LANG.json files in {xdir}")
    if languages:
        keep = set(languages) | {"en"}
        found = {k: v for k, v in found.items() if k in keep}
    sdir = join(source, "squad-v1.1-dev")
    candidates = [
        [join(sdir, "part1.json"), join(sdir, "part2.json")],
        [join(sdir, "dev-v1.1.json")],
        [join(source, "dev-v1.1.json")],
    ]
    for files in candidates:
        if storage.exists(files[0]):
            missing = [f for f in files if not storage.exists(f)]
            if missing:
                raise BenchmarkError(f"SQuAD dev set is incomplete: {missing} missing")
            return XQuADFiles(dict(sorted(found.items())), files)
    raise BenchmarkError(
        f"no SQuAD v1.1 dev set under {source!r}: expected squad-v1.1-dev/part1.json + part2.json "
        "or squad-v1.1-dev/dev-v1.1.json"
    )


@dataclass
class XQuADQuestion:
    base_id: str
    text: str
    answers: List[str]
    line: int  # 1-based ordinal of the question in its file (for quarantine rows)


@dataclass
class SquadQuestion:
    docid: str
    text: str
    answers: List[str]


@dataclass
class XQuADSource:
    """Parsed XQuAD + SQuAD dev, independent of any benchmark setting."""

    files: XQuADFiles
    paragraphs: List[Tuple[str, int, str, str, str]]  # (source, ordinal, docid, title, text)
    squad: Dict[str, SquadQuestion]  # SQuAD question id -> where and what (file order)
    id_docids: Dict[str, List[str]]  # question id -> every paragraph that holds it
    xquad: Dict[str, List[XQuADQuestion]]  # lang -> questions in file order
    context_mismatches: int = 0  # xquad.en contexts differing from the SQuAD paragraph


def _answers(qa: Dict[str, Any]) -> List[str]:
    return [str(a.get("text", "")) for a in qa.get("answers", []) if isinstance(a, dict)]


def read_xquad_source(source: str, storage: Optional[Storage] = None, languages: Sequence[str] = ()) -> XQuADSource:
    """Parse the SQuAD dev paragraphs and the XQuAD files (``languages`` + en; all if empty)."""
    storage = storage or Storage()
    files = xquad_files(source, storage, languages)
    paragraphs: List[Tuple[str, int, str, str, str]] = []
    squad: Dict[str, SquadQuestion] = {}
    id_docids: Dict[str, List[str]] = {}
    contexts: Dict[str, str] = {}
    for uri in files.squad:
        data = json.loads(_read_bytes(uri, storage))
        ordinal = 0
        for article in data["data"]:
            title = article["title"]
            for i, para in enumerate(article["paragraphs"]):
                ordinal += 1
                # Index within the article in the dev file: stable, readable docids.
                docid = f"{title}#{i}"
                paragraphs.append((uri, ordinal, docid, title.replace("_", " "), para["context"]))
                contexts[docid] = para["context"]
                for qa in para["qas"]:
                    id_docids.setdefault(qa["id"], []).append(docid)
                    squad.setdefault(qa["id"], SquadQuestion(docid, qa["question"], _answers(qa)))
    xquad: Dict[str, List[XQuADQuestion]] = {}
    mismatches = 0
    for lang, uri in files.xquad.items():
        data = json.loads(_read_bytes(uri, storage))
        qs: List[XQuADQuestion] = []
        for article in data["data"]:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    qs.append(XQuADQuestion(qa["id"], qa["question"], _answers(qa), len(qs) + 1))
                    if lang == "en":
                        docs = id_docids.get(qa["id"], [])
                        if len(docs) == 1 and contexts[docs[0]] != para["context"]:
                            mismatches += 1
        xquad[lang] = qs
    return XQuADSource(files, paragraphs, squad, id_docids, xquad, mismatches)


