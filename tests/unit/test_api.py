from __future__ import annotations

import ast
import inspect
import pathlib
from collections.abc import Iterator

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


def _imports(tree: ast.Module, *, skip_type_checking: bool) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import; ``if TYPE_CHECKING:`` blocks skipped if asked."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if (
            skip_type_checking
            and isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test)
        ):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, [a.name for a in node.names]
        todo.extend(ast.iter_child_nodes(node))


def _hutch_modules() -> dict[str, pathlib.Path]:
    root = pathlib.Path(hutch.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = ("hutch", *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def test_only_the_amqp_package_imports_pika() -> None:
    """pika lives in one layer: nothing outside ``hutch._amqp`` imports it, not even lazily."""
    offenders = []
    for name, path in _hutch_modules().items():
        if name == "hutch._amqp" or name.startswith("hutch._amqp."):
            continue
        tree = ast.parse(path.read_text())
        for module, _names in _imports(tree, skip_type_checking=False):
            if module == "pika" or module.startswith("pika."):
                offenders.append(f"{name} imports {module}")
    assert offenders == []


def _import_graph() -> dict[str, set[str]]:
    modules = _hutch_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names in _imports(ast.parse(path.read_text()), skip_type_checking=True):
            if module not in modules:
                continue
            # ``from hutch._x import y``: y may be a submodule, imported as such
            targets = {f"{module}.{n}" for n in names} & modules.keys() or {module}
            # a module's own packages are imported before it anyway: not an edge
            graph[name] |= {t for t in targets if not f"{name}.".startswith(f"{t}.")}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_hutch_modules() -> None:
    """No hutch module imports one that imports it back (imports under TYPE_CHECKING aside).

    Lazy imports inside functions count too: they only hide a cycle until the call. A
    module importing its own package is no edge (Python imports the package first).
    """
    assert _find_cycle(_import_graph()) is None


def test_the_cycle_finder_finds_cycles() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = _import_graph()
    assert "hutch._amqp.channel" in graph["hutch._amqp"]  # the graph sees real edges


def test_only_the_connection_facade_reaches_the_driver() -> None:
    """The patterns use the channel API: no ``.io`` (the driver) outside hutch._amqp."""
    offenders = []
    for name, path in _hutch_modules().items():
        if name in ("hutch._connection", "hutch._amqp") or name.startswith("hutch._amqp."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("io", "_io"):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


MAX_LINES = 800  # past this a module holds several concepts (STYLE.md, issue 11)


def test_no_module_in_the_package_is_over_800_lines() -> None:
    root = pathlib.Path(hutch.__file__).parent
    sizes = {
        str(path.relative_to(root)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(root.rglob("*.py"))
    }
    assert len(sizes) > 50  # the walk found the package
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these modules by concept: {too_long}"
