"""The user's mistakes versus our bugs, and the one way a user error crosses from a Ray worker to the driver.

A :class:`UserError` says what the user must change (config, data, files); the
CLI prints its one line instead of a traceback.  Raised inside a Ray task or
actor it would reach the driver wrapped by Ray (``RayTaskError``,
``ActorDiedError``, a Ray Data ``UserCodeException``), sometimes with the
original object, sometimes only as text in a remote traceback.  So workers
never let a user error out as it is: :func:`carry_user_errors` turns it into a
:class:`CarriedUserError` whose message is a marker and ``{"type":
"module:qualname", "message": ...}`` as one JSON line, which survives both
pickling and being flattened into a traceback string.  On the driver
:func:`user_error` finds it anywhere in the chain (object or text) and rebuilds
the same class by importing it: only subclasses of :class:`UserError` defined
in ``xqg_ray``, so no table of classes is kept and a new class needs nothing.
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any, Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Starts the carried payload in a worker error's message (and in any traceback text quoting it).
MARK = "xqg_ray user error "
PACKAGE = "xqg_ray"


class UserError(ValueError):
    """Base class of errors whose message tells the user what to change (config, data, files)."""


class CarriedUserError(Exception):
    """A :class:`UserError` on its way from a Ray worker to the driver: its class and message as text."""

    @classmethod
    def of(cls, e: UserError) -> "CarriedUserError":
        kind = f"{type(e).__module__}:{type(e).__qualname__}"
        return cls(MARK + json.dumps({"type": kind, "message": str(e)}))


def carry_user_errors(fn: F) -> F:
    """``fn`` that raises a :class:`CarriedUserError` where ``fn`` raises a :class:`UserError` (for code run by Ray)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise CarriedUserError.of(e) from None

    return call  # type: ignore[return-value]


def decode_carried(text: str) -> Optional[UserError]:
    """The user error a :class:`CarriedUserError`'s message (or any text quoting it) carries, else None."""
    at = text.find(MARK)
    if at < 0:
        return None
    try:
        payload, _ = json.JSONDecoder().raw_decode(text, at + len(MARK))
        kind, message = payload["type"], payload["message"]
    except (ValueError, KeyError, TypeError):
        return None
    cls = user_error_class(kind)
    # Built without calling a subclass's own __init__ (it may take other arguments): the
    # class and the one-line message are what the driver needs.
    e = cls.__new__(cls)
    e.args = (message,)
    return e


def user_error_class(kind: str) -> type:
    """The class named ``module:qualname`` if it is a :class:`UserError` defined in ``xqg_ray``, else :class:`UserError`."""
    module, _, qualname = kind.partition(":")
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return UserError  # never import a module a worker's message names outside the package
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return UserError
    return obj if isinstance(obj, type) and issubclass(obj, UserError) else UserError


def user_error(exc: BaseException) -> Optional[BaseException]:
    """The user-facing error inside ``exc`` (itself, a carried one, or a Ray task's cause), else None."""
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        # Ray's RayTaskError(CorpusError) *is* a CorpusError whose message is the
        # remote traceback: keep digging for the original, raised by our code.
        if isinstance(e, UserError) and type(e).__module__.startswith(PACKAGE):
            return e
        found = decode_carried(str(e))
        if found is not None:
            return found
        # ray.exceptions.RayTaskError keeps the worker's exception in .cause (an
        # ActorDiedError keeps a context record there: not an exception)
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else e.__cause__
    return None


def reraise_user_error(exc: BaseException) -> None:
    """Inside ``except``: re-raise the user error carried by ``exc`` (without the Ray wrapper), if any."""
    found = user_error(exc)
    if found is not None and found is not exc:
        raise found.with_traceback(None) from None
