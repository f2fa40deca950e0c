"""A script of ``tools/`` loaded as a module by its path, for its tests (``tools/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(script: str) -> ModuleType:
    """``tools/<script>`` as the module ``xqg_tool_<stem>`` (registered first: dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(f"xqg_tool_{Path(script).stem}", TOOLS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
