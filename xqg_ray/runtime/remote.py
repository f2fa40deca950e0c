"""Code that Ray runs elsewhere: task functions shipped by value and actor classes, both carrying user errors.

Every function or class this package hands to Ray goes through here, so a
:class:`~xqg_ray.errors.UserError` raised in a worker always leaves it as a
:class:`~xqg_ray.errors.CarriedUserError` (see :mod:`xqg_ray.errors`), which the
driver turns back into the same class with its one-line message.
"""

from __future__ import annotations

import inspect
import types
from typing import Any, Callable

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


def remote_function(fn: Callable, **options: Any) -> Any:
    """``ray.remote(**options)`` of ``fn`` shipped by value, its user errors carried to the driver."""
    import ray

    return ray.remote(**options)(carry_user_errors(by_value(fn)))


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


__all__ = ["by_value", "remote_function", "carrying_class", "remote_class"]
