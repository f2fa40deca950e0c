"""Code that Ray runs elsewhere: task functions shipped by value and actor classes, both carrying user errors.

Every function or class this package hands to Ray goes through here, so a
:class:`~xqg_ray.errors.UserError` raised in a worker always leaves it as a
:class:`~xqg_ray.errors.CarriedUserError` (see :mod:`xqg_ray.errors`), which the
driver turns back into the same class with its one-line message.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import sys
import types
from typing import Any, Callable, Optional

from ..errors import carry_user_errors


def by_value(fn: Callable) -> Callable:
    """A copy of ``fn`` that Ray ships by value: a worker then imports only the modules of
    the names ``fn`` uses, not ``fn``'s whole module (importing the evaluate stage pulls in
    nltk and scipy.stats, 5 s in every fresh worker for a task that reads one file)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__, copy.__doc__ = fn.__kwdefaults__, fn.__doc__
    # cloudpickle pickles a function by reference only when its module's attribute
    # of that name is the very same object: this copy is not.
    copy.__module__, copy.__qualname__ = fn.__module__, fn.__qualname__
    return copy


_TRIM: Optional[Callable[[int], int]] = None


def release_freed_memory() -> None:
    """Hand the heap pages that freed objects left behind back to the OS: pyarrow's pool, then glibc's.

    A Ray worker runs many tasks in turn, and both allocators keep what a task freed
    for reuse, so a worker's resident memory is the largest task it ever ran plus
    fragments: measured at 1M passages, a worker that had reduced corpus partitions
    started an index build at 420-660 MB, and at 230-245 MB after this (the build's
    own peak came on top).  A process's peak then follows its own task, which the
    configuration sizes.  A no-op where glibc's ``malloc_trim`` does not exist.
    """
    global _TRIM
    pa = sys.modules.get("pyarrow")  # never imported for this: a worker that did not use it has nothing in its pool
    if pa is not None:
        pa.default_memory_pool().release_unused()
    if _TRIM is None:
        try:
            _TRIM = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError):
            _TRIM = lambda pad: 0  # noqa: E731  (not glibc)
    _TRIM(0)


def releasing_memory(fn: Callable) -> Callable:
    """``fn`` that returns freed memory to the OS before it starts (what the worker's previous task left,
    Ray Data's own tasks included) and after it ends (what it leaves for the next one)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        release_freed_memory()
        try:
            return fn(*args, **kwargs)
        finally:
            release_freed_memory()

    return call


def remote_function(fn: Callable, **options: Any) -> Any:
    """``ray.remote(**options)`` of ``fn`` shipped by value, its user errors carried to the driver, the
    memory it freed returned to the OS before and after each call (:func:`release_freed_memory`)."""
    import ray

    return ray.remote(**options)(releasing_memory(carry_user_errors(by_value(fn))))


def carrying_class(cls: type) -> type:
    """A subclass of ``cls`` whose constructor and public methods carry user errors to the driver.

    Same name and module as ``cls`` (Ray shows actors by it); not the attribute of its
    module, so cloudpickle ships it by value and its base, ``cls``, by reference.
    """
    ns = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    for name in dir(cls):
        if name == "__init__" or not name.startswith("_"):
            attr = inspect.getattr_static(cls, name)
            if inspect.isfunction(attr):
                ns[name] = carry_user_errors(attr)
    return type(cls.__name__, (cls,), ns)


def remote_class(cls: type, **options: Any) -> Any:
    """``ray.remote(**options)`` of ``cls`` (an actor class), its user errors carried to the driver."""
    import ray

    return ray.remote(**options)(carrying_class(cls))


__all__ = ["by_value", "release_freed_memory", "releasing_memory", "remote_function", "carrying_class", "remote_class"]
