"""Loading an object named ``"package.module:attribute"``: one rule set for every caller.

``WorkerPool(handler="myapp.tasks:resize")``, ``hutch worker myapp.tasks:resize``,
``hutch serve myapp.rpc:server`` and :func:`hutch._rpc.load_server` all name a Python object
by its module's import path, a colon, and the attribute path inside the module (dotted for a
nested one, e.g. ``"myapp.tasks:Resizer.run"``). This module parses such a spec, imports the
module and walks the attributes, so a mistake gets the same message wherever it is made.

A malformed spec, a module that cannot be imported and a missing attribute are
:class:`ValueError`; a spec that is not a string is a :class:`TypeError`. A module that
exists but whose own ``import`` fails is a :class:`ValueError` naming the failing line (not
the working directory). An exception other than :class:`ImportError` raised by the module's
own top-level code is passed on unchanged.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

__all__ = ["failing_line", "load_callable", "load_instance", "load_object", "parse_spec"]

T = TypeVar("T")


def parse_spec(spec: object, *, form: str, example: str) -> tuple[str, list[str]]:
    """Split ``"package.module:attr.path"`` into the module name and the attribute names.

    Args:
        spec: The spec as given.
        form: The expected form for error messages, e.g. ``"package.module:function"``.
        example: An example for error messages, e.g. ``"myapp.tasks:resize"``.

    Returns:
        The module's import path and the attribute path split at its dots.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: ``spec`` has no colon, an empty side, an empty dotted part or a second
            colon.

    Example:
        >>> parse_spec("os.path:join", form="package.module:function", example="a.b:c")
        ('os.path', ['join'])
    """
    if not isinstance(spec, str):
        raise TypeError(f"expected a {form!r} string, got {type(spec).__name__}")
    module_name, sep, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    parts = attr_path.split(".")
    if (
        not sep
        or not module_name
        or not attr_path
        or ":" in attr_path
        or any(not part.strip() for part in parts)
        or any(not part.strip() for part in module_name.split("."))
    ):
        raise ValueError(
            f"expected {form!r}, got {spec!r}: a spec must look like {example!r} "
            "(the module's import path, a colon, then the name inside the module)"
        )
    return module_name, [part.strip() for part in parts]


def failing_line(exc: BaseException) -> str:
    """Where user code raised ``exc``: `` at path:line: source``, or "" if unknown.

    The innermost frame outside the import machinery is the line that raised (for an
    ImportError, the ``import`` statement that failed).
    """
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<") and "importlib" not in f.filename
    ]
    if not frames:
        return ""
    frame = frames[-1]
    source = f": {frame.line.strip()}" if frame.line else ""
    return f" at {frame.filename}:{frame.lineno}{source}"


def _add_cwd_to_path() -> None:
    """Put the working directory on ``sys.path``, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_object(
    spec: str,
    *,
    what: str = "object",
    form: str = "package.module:attribute",
    example: str = "myapp.module:name",
    from_cwd: bool = False,
) -> object:
    """Import the object named by ``"package.module:attribute"``.

    Args:
        spec: The module's import path and the (possibly dotted) attribute path, joined by
            a colon.
        what: What the object is, for error messages (``"handler"``, ``"server"``).
        form: The expected form, for error messages.
        example: An example spec, for error messages.
        from_cwd: Put the working directory on ``sys.path`` first (as ``python -m`` does),
            so a module next to where a command runs is found.

    Returns:
        The object.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: The spec is malformed, the module cannot be imported (an
            :class:`ImportError`, its own or one of its imports') or the attribute does not
            exist; the message says which.

    Example:
        >>> load_object("os.path:join") is __import__("os").path.join
        True
    """
    module_name, attrs = parse_spec(spec, form=form, example=example)
    if from_cwd:
        _add_cwd_to_path()
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        detail = str(exc).strip() or type(exc).__name__
        if isinstance(exc, ModuleNotFoundError) and (
            module_name == missing or module_name.startswith(missing + ".")
        ):
            raise ValueError(
                f"cannot import module {module_name!r} of {what} {spec!r}: no module named "
                f"{missing!r} (is the package installed, or the working directory on sys.path?)"
            ) from exc
        # the module was found; an import in its own code failed: show that line
        raise ValueError(
            f"importing module {module_name!r} of {what} {spec!r} failed"
            f"{failing_line(exc)}: {type(exc).__name__}: {detail}"
        ) from exc
    for index, part in enumerate(attrs):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = module_name if index == 0 else f"{module_name}:{'.'.join(attrs[:index])}"
            owner = "module" if index == 0 else "object"
            raise ValueError(
                f"{owner} {where!r} has no attribute {'.'.join(attrs[index:])!r} ({what} {spec!r})"
            ) from None
    return obj


def load_callable(
    spec: str,
    *,
    what: str = "handler",
    form: str = "package.module:function",
    example: str = "myapp.tasks:resize",
    from_cwd: bool = False,
) -> Callable[..., object]:
    """Import a callable named ``"package.module:function"`` (or ``"module:Class.method"``).

    Args:
        spec: The spec, as for :func:`load_object`.
        what: What the callable is, for error messages.
        form: The expected form, for error messages.
        example: An example spec, for error messages.
        from_cwd: Put the working directory on ``sys.path`` first.

    Returns:
        The callable.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: As for :func:`load_object`, or the object is not callable.

    Example:
        >>> load_callable("os.path:join")("a", "b")
        'a/b'
    """
    obj = load_object(spec, what=what, form=form, example=example, from_cwd=from_cwd)
    if not callable(obj):
        raise ValueError(f"{what} {spec!r} is a {type(obj).__name__}, not a callable")
    return obj


def load_instance(
    spec: str,
    cls: type[T],
    *,
    what: str,
    expected: str | None = None,
    form: str = "package.module:attribute",
    example: str = "myapp.module:name",
    from_cwd: bool = False,
) -> T:
    """Import an instance of ``cls`` named ``"package.module:attribute"``.

    Args:
        spec: The spec, as for :func:`load_object`.
        cls: The class the object must be an instance of.
        what: What the object is, for error messages.
        expected: The class with its article for error messages (``"an RpcServer"``);
            by default ``"a"`` and the class name.
        form: The expected form, for error messages.
        example: An example spec, for error messages.
        from_cwd: Put the working directory on ``sys.path`` first.

    Returns:
        The object.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: As for :func:`load_object`, or the object is not a ``cls``.

    Example:
        >>> load_instance("os:sep", str, what="separator")
        '/'
    """
    obj = load_object(spec, what=what, form=form, example=example, from_cwd=from_cwd)
    if not isinstance(obj, cls):
        package = cls.__module__.split(".")[0]
        qualified = cls.__name__ if package == "builtins" else f"{package}.{cls.__name__}"
        raise ValueError(
            f"{what} {spec!r} is a {type(obj).__name__}, not {expected or 'a ' + cls.__name__}: "
            f"point it at the {qualified} object your module creates"
        )
    return obj
