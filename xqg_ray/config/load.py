"""Loading and saving a configuration: schema <- YAML file <- dotlist overrides, and back to YAML.

The schema is an OmegaConf structured config, so unknown keys and wrong types
are errors; the loaded config is validated (``validate.py``) and its sweeps
expanded (``systems.py``).  The saved YAML has its secrets masked (``secrets.py``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

from .schema import ConfigError, RunConfig
from .secrets import mask_secrets
from .systems import expand_sweeps
from .validate import validate


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Schema <- YAML file <- dotlist overrides, validated.  Returns a typed RunConfig."""
    cfg = OmegaConf.structured(RunConfig)
    try:
        if path:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # omegaconf raises several types; one message for the user
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {e}") from e
    obj: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(obj)
    return expand_sweeps(obj)


def to_yaml(cfg: RunConfig, redact: bool = True) -> str:
    """The resolved config as YAML, with secrets masked as '***' (see :func:`mask_secrets`)."""
    return OmegaConf.to_yaml(OmegaConf.structured(mask_secrets(cfg) if redact else cfg))


def section_dict(obj: Any) -> Any:
    """A plain dict/list copy of a config section (for fingerprints and manifests)."""
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)
