from __future__ import annotations

import inspect

import hutch
from hutch import _exceptions


def test_all_matches_namespace_and_is_sorted() -> None:
    public = {n for n in dir(hutch) if not n.startswith("_")} - {"testing"}
    modules = {n for n in public if inspect.ismodule(getattr(hutch, n))}
    assert set(hutch.__all__) - {"__version__"} == public - modules
    assert list(hutch.__all__) == sorted(hutch.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in hutch.__all__:
        obj = getattr(hutch, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert member.__doc__, f"{name}.{attr}"


def test_every_exception_derives_from_hutch_error() -> None:
    for name in _exceptions.__all__:
        cls = getattr(_exceptions, name)
        assert issubclass(cls, hutch.HutchError), name
    assert issubclass(hutch.RpcTimeout, TimeoutError)
    assert issubclass(hutch.OperationTimeout, TimeoutError)
    assert issubclass(hutch.AuthenticationError, hutch.ConnectError)


def test_no_pickle_in_the_package() -> None:
    import pathlib

    root = pathlib.Path(hutch.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.loads" not in text, path


def test_only_the_connection_layer_imports_pika() -> None:
    import pathlib

    root = pathlib.Path(hutch.__file__).parent
    allowed = {"_connection.py", "_channel.py"}
    for path in root.rglob("*.py"):
        if path.name in allowed:
            continue
        text = path.read_text()
        assert "import pika" not in text and "from pika" not in text, path
