"""Credentials kept out of everything saved, printed or logged.

:func:`redact` masks the credential-like parts of any text (an error line, a
log event, a URL); :func:`mask_secrets` applies it to every string of a config
and blanks the ``storage`` credential fields, for the saved ``config.yaml``.
The run itself keeps the real values: only what leaves the process is masked.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, TypeVar

from .schema import SECRET_KEYS

MASK = "***"

# A parameter or option whose name says it holds a credential, then its value:
# query strings (?X-Amz-Security-Token=..., &sig=...), dotlist overrides
# (storage.secret_key=...), YAML / JSON / repr pairs ("session_token": "...").
_CREDENTIAL_NAME = (
    r"token|signature|sig|password|passwd|pwd|secret|credentials?|"
    r"access[_-]?key(?:[_-]?id)?|api[_-]?key|key|" + "|".join(SECRET_KEYS)
)
_PARAM = re.compile(
    r"(?i)(\b[\w.-]*?(?:" + _CREDENTIAL_NAME + r"))"  # the name, possibly dotted or prefixed (X-Amz-...)
    r"(['\"]?\s*[=:]\s*['\"]?)"  # = or :, with the quotes of JSON / repr
    r"([^\s&'\";,]+)"  # the value, up to the next separator
)
# The user-info of a URL (scheme://user:password@host): a key id, a password or a token.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")


def redact(text: str) -> str:
    """``text`` with credential-like values replaced by ``***`` (query-string tokens, key=value, user:password@)."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _PARAM.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


T = TypeVar("T")


def mask_secrets(cfg: T) -> T:
    """A copy of a config (any dataclass) with every string redacted and the credential fields blanked to ``***``."""
    return _masked(copy.deepcopy(cfg))


def _masked(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, list):
        return [_masked(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _masked(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            # The credential fields hold bare values: nothing in them says "key=".
            setattr(obj, f.name, MASK if f.name in SECRET_KEYS and v else _masked(v))
    return obj
