"""hutch._loading: one "package.module:attribute" loader for handlers, servers and the CLI."""

from __future__ import annotations

import importlib.util
import os.path
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hutch._loading import load_callable, load_instance, load_object, parse_spec

pytestmark = pytest.mark.timeout(60)

MODULE = "hutch_loading_test_app"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module in a fresh directory that is NOT on sys.path (only the cwd is)."""
    (tmp_path / f"{MODULE}.py").write_text(
        textwrap.dedent(
            """
            class Service:
                class Inner:
                    def run(self) -> str:
                        return "ran"

                number = 3

            def handle(body: object) -> object:
                return body
            """
        )
    )
    (tmp_path / "hutch_loading_broken.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "hutch_loading_raises.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in (MODULE, "hutch_loading_broken", "hutch_loading_raises"):
        sys.modules.pop(name, None)


def test_parse_spec() -> None:
    assert parse_spec(" os.path : join ", form="f", example="e") == ("os.path", ["join"])
    assert parse_spec("a.b:C.d", form="f", example="e") == ("a.b", ["C", "d"])


def test_loads_dotted_attributes_from_installed_modules() -> None:
    assert load_object("os.path:join") is os.path.join
    assert load_callable("os.path:join") is os.path.join
    assert load_instance("os.path:sep", str, what="separator") == os.path.sep


def test_the_working_directory_only_when_asked(app: Path) -> None:
    with pytest.raises(ValueError, match=f"cannot import module '{MODULE}'.*no module named"):
        load_callable(f"{MODULE}:handle")
    handle = load_callable(f"{MODULE}:handle", from_cwd=True)
    assert handle(5) == 5
    assert load_callable(f"{MODULE}:Service.Inner.run")(None) == "ran"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("os.path.join", "expected 'package.module:function'"),
        (":join", "must look like 'myapp.tasks:resize'"),
        ("os.path:", "expected"),
        ("os.path:join.", "expected"),
        ("os..path:join", "expected"),
        ("os:path:join", "expected"),
        ("no_such_module_xyz:run", "cannot import module 'no_such_module_xyz' of handler"),
        ("os.path:no_such_function", "module 'os.path' has no attribute 'no_such_function'"),
        ("os:path.nope", "object 'os:path' has no attribute 'nope'"),
        ("os:sep", "handler 'os:sep' is a str, not a callable"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_callable(spec)


def test_import_failures_inside_the_module(app: Path) -> None:
    # an ImportError of the module's own imports: a ValueError naming the missing one
    with pytest.raises(ValueError, match="no_such_dependency_xyz") as info:
        load_object("hutch_loading_broken:x", from_cwd=True)
    assert isinstance(info.value.__cause__, ImportError)
    # any other exception of the module's own code is passed on unchanged
    with pytest.raises(RuntimeError, match="boom at import"):
        load_object("hutch_loading_raises:x", from_cwd=True)


def test_wrong_kind_of_object(app: Path) -> None:
    with pytest.raises(ValueError, match="is a int, not an int-like thing"):
        load_instance(
            f"{MODULE}:Service.number", str, what="x", expected="an int-like thing", from_cwd=True
        )
    with pytest.raises(ValueError, match="is a int, not a str"):
        load_instance(f"{MODULE}:Service.number", str, what="x", from_cwd=True)


def test_a_spec_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="got int"):
        load_object(3)  # type: ignore[arg-type]


def importable(spec: str) -> bool:
    """Whether the spec's top-level module exists (found without importing it)."""
    try:
        module, _ = parse_spec(spec, form="f", example="e")
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (TypeError, ValueError, ImportError):
        return False


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40) | st.builds("{}:{}".format, st.text(max_size=15), st.text(max_size=15)))
def test_any_text_fails_with_a_value_error_that_says_why(spec: str) -> None:
    assume(not importable(spec))  # never import a real module picked at random
    with pytest.raises(ValueError, match=r"expected 'package\.module:attribute'|cannot import"):
        load_object(spec)
