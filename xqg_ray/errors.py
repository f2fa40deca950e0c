"""The user's mistakes versus our bugs: errors that become a one-line message, even from Ray workers.

A data or config problem found inside a Ray task or actor reaches the driver
wrapped in ``RayTaskError`` with a remote traceback.  :func:`user_error` digs
the original exception out, so the CLI prints the one line that says what to
fix instead of a traceback.
"""

from __future__ import annotations

from typing import Optional


class UserError(ValueError):
    """Base class of errors whose message tells the user what to change (config, data, files)."""


def user_error(exc: BaseException) -> Optional[BaseException]:
    """The user-facing error inside ``exc`` (itself, or a Ray task's cause), else None."""
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # Ray's RayTaskError(CorpusError) *is* a CorpusError whose message is the
        # remote traceback: keep digging for the original, raised by our code.
        if isinstance(e, UserError) and type(e).__module__.startswith("xqg_ray"):
            return e
        # ray.exceptions.RayTaskError keeps the worker's exception in .cause
        e = getattr(e, "cause", None) or e.__cause__
    return None


def reraise_user_error(exc: BaseException) -> None:
    """Inside ``except``: re-raise the user error carried by ``exc`` (without the Ray wrapper), if any."""
    found = user_error(exc)
    if found is not None and found is not exc:
        raise found.with_traceback(None) from None
