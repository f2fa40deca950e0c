"""Stage outputs, manifests and fingerprints (what makes a run resumable).

A stage writes its data under ``{output_dir}/{stage}/data-{fp12}/`` and then
``{output_dir}/{stage}/manifest.json`` last.  The manifest names the
fingerprint of everything the stage depends on (its config section and the
fingerprints of its inputs); a rerun whose fingerprint matches reuses the
data, anything else recomputes it.  Readers go through the manifest, so a
crash mid-write never exposes half a stage.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Dict, Optional

from .storage import Storage, join


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StageStore:
    def __init__(self, storage: Storage, output_dir: str, resume: bool = True):
        self.storage, self.output_dir, self.resume = storage, output_dir, resume

    def dir(self, stage: str) -> str:
        return join(self.output_dir, stage)

    def data_uri(self, stage: str, fp: str) -> str:
        return join(self.output_dir, stage, f"data-{fp[:12]}")

    def manifest_uri(self, stage: str) -> str:
        return join(self.output_dir, stage, "manifest.json")

    def reusable(self, stage: str, fp: str) -> Optional[Dict]:
        """The stage's manifest if it is complete and was made from the same inputs."""
        if not self.resume:
            return None
        uri = self.manifest_uri(stage)
        if not self.storage.exists(uri):
            return None
        m = self.storage.read_json(uri)
        return m if m.get("fingerprint") == fp else None

    def commit(self, stage: str, fp: str, **fields) -> Dict:
        m = {"stage": stage, "fingerprint": fp, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        self.storage.write_json(self.manifest_uri(stage), m)
        # Older data-* directories of this stage are unreachable now.
        for uri in self._other_data_dirs(stage, fp):
            self.storage.delete(uri)
        return m

    def _other_data_dirs(self, stage: str, fp: str):
        import pyarrow.fs as pafs

        fs, path = self.storage.resolve(self.dir(stage))
        keep = f"data-{fp[:12]}"
        prefix = self.dir(stage)[: len(self.dir(stage)) - len(path)] if "://" in self.dir(stage) else ""
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            name = info.path.rstrip("/").rsplit("/", 1)[-1]
            if info.type == pafs.FileType.Directory and name.startswith("data-") and name != keep:
                yield prefix + info.path
