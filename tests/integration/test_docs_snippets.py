"""Every ```python block of the docs' pages runs against the broker and prints what it shows.

A block is a complete program that reads the broker URL from ``HUTCH_URL``; it runs as a
script in a subprocess. A ```text block right after it (only prose in between) is its
expected output, compared line by line. A block that defines ``test_*`` functions is a pytest
module: its tests run here, in this session, with the real fixtures.

Exchange and queue names written as ``hutch.Exchange("name"...)`` / ``hutch.Queue("name"...)``
or passed as ``queue="name"`` get a prefix unique to the snippet's run, so the snippets never
meet another run's messages, and are deleted afterwards with what hutch declared for them (a
work queue's ``<name>.dead`` and its retry delay queues ``<name>.retry.<ms>``). On a broker
hutch.testing started, the last test lists the broker's queues and exchanges to check that the
snippets left nothing behind.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import hutch
from hutch.testing import Broker
from tests.background import Program, Programs

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    "README.md",
    "docs/index.md",
    "docs/quickstart.md",
    "docs/broadcast.md",
    "docs/routing.md",
    "docs/threading.md",
    "docs/exceptions.md",
    "docs/testing.md",
    "docs/work-queues.md",
    "docs/rpc.md",
    "docs/rpc-wire-format.md",
    "docs/reliability.md",
]

#: Every snippet's names start with ``docs-<RUN>-``, so one listing finds what a run left.
RUN = uuid.uuid4().hex[:6]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
NAMED = re.compile(r'(?:hutch\.(?:Exchange|Queue)\(\s*|queue=)"([^"]+)"')


@dataclass
class Snippet:
    page: str
    index: int
    code: str
    expected: str | None

    @property
    def id(self) -> str:
        return f"{self.page}#{self.index}"


def snippets() -> list[Snippet]:
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        fences = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
        index = 0
        for i, (lang, code) in enumerate(fences):
            if lang != "python":
                continue
            index += 1
            following = fences[i + 1] if i + 1 < len(fences) else None
            expected = following[1] if following is not None and following[0] == "text" else None
            found.append(Snippet(page, index, code, expected))
    return found


SNIPPETS = snippets()
SCRIPTS = [s for s in SNIPPETS if "def test_" not in s.code]
TEST_MODULES = [s for s in SNIPPETS if "def test_" in s.code]


def rabbitmq_only_because(code: str) -> str | None:
    """Why a snippet (or a documented test's code) needs RabbitMQ, or None: it runs on both.

    A script snippet runs in a process of its own, so on ``--hutch-broker=memory`` it gets a
    memory broker of its own: every snippet that is a whole program works there too, except
    these.
    """
    if "import pika" in code:
        return "plain pika on the wire: a program we did not write"
    if "throwaway_broker" in code:
        return "throwaway_broker() finds or starts a RabbitMQ broker itself"
    if "hutch_broker" in code:
        return "fault injection: closes connections from the broker side"
    return None


def on_both(snippet: Snippet, code: str | None = None) -> pytest.MarkDecorator | tuple[()]:
    """The ``rabbitmq_only`` mark for a parameter whose code needs RabbitMQ."""
    reason = rabbitmq_only_because(snippet.code if code is None else code)
    return () if reason is None else pytest.mark.rabbitmq_only(reason)


def isolate(code: str, prefix: str) -> tuple[str, list[str]]:
    names = sorted(set(NAMED.findall(code)), key=len, reverse=True)
    for name in names:
        code = code.replace(f'"{name}"', f'"{prefix}{name}"')
    return code, [prefix + n for n in names]


def retry_delays_ms(code: str) -> set[int]:
    """The ``<queue>.retry.<ms>`` suffixes a snippet's work queues can use.

    Those of the default policy and of every ``RetryPolicy(...)`` the code builds.
    """
    policies = [hutch.RetryPolicy()]
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "RetryPolicy":
            expression = compile(ast.Expression(node), "<snippet>", "eval")
            policies.append(eval(expression, {"hutch": hutch, "RetryPolicy": hutch.RetryPolicy}))
    return {max(1, round(delay * 1000)) for policy in policies for delay in policy.delays()}


def cleanup(url: str, names: list[str], delays_ms: set[int]) -> None:
    with hutch.connect(url) as conn:
        ch = conn.channel()
        for name in names:
            ch.delete_queue(name)
            ch.delete_queue(f"{name}.dead")
            for ms in sorted(delays_ms):
                ch.delete_queue(f"{name}.retry.{ms}")
            ch.delete_exchange(name)
        ch.close()


def leftovers(broker: Broker) -> list[str]:
    """The queues and exchanges of this run's snippets that are still on the broker."""
    found = []
    for kind in ("queues", "exchanges"):
        out = broker.rabbitmqctl(f"list_{kind}", "-q", "--no-table-headers", "name")
        found += [f"{kind[:-1]} {n}" for n in out.split() if n.startswith(f"docs-{RUN}-")]
    return found


def test_the_pages_have_snippets() -> None:
    per_page = {page: sum(s.page == page for s in SNIPPETS) for page in PAGES}
    assert all(per_page.values()), per_page
    assert len(SCRIPTS) >= 15 and TEST_MODULES


def background_programs(url: str, items: list[pytest.Item]) -> dict[str, Program]:
    """The script snippets of the selected tests, as background programs (they mostly wait).

    Each one's names get a prefix of its own, and what it declared is deleted when it ends.
    """
    wanted = {
        item.callspec.id
        for item in items
        if isinstance(item, pytest.Function) and item.originalname == RUNS_AND_PRINTS
    }
    found = {}
    for snippet in SCRIPTS:
        if snippet.id in wanted:
            code, names = isolate(snippet.code, f"docs-{RUN}-{uuid.uuid4().hex[:8]}.")
            delays = retry_delays_ms(snippet.code)
            found[f"docs:{snippet.id}"] = Program(
                [sys.executable, "-c", code],
                env={**os.environ, "HUTCH_URL": url, "HUTCH_TEST_AMQP_URL": url},
                timeout=45,
                cwd=str(ROOT),
                cleanup=functools.partial(cleanup, url, names, delays),
            )
    return found


RUNS_AND_PRINTS = "test_snippet_runs_and_prints_what_the_page_shows"


@pytest.mark.parametrize("snippet", [pytest.param(s, marks=on_both(s), id=s.id) for s in SCRIPTS])
def test_snippet_runs_and_prints_what_the_page_shows(programs: Programs, snippet: Snippet) -> None:
    result = programs.result(f"docs:{snippet.id}")
    assert result.returncode == 0, f"{snippet.id} failed:\n{result.stderr}"
    if snippet.expected is not None:
        assert result.stdout.splitlines() == snippet.expected.splitlines(), snippet.id


def documented_tests() -> list[tuple[Snippet, str, str]]:
    """(snippet, test name, the test's own code) of every documented test."""
    found = []
    for snippet in TEST_MODULES:
        tree = ast.parse(snippet.code)
        found += [
            (snippet, node.name, ast.get_source_segment(snippet.code, node) or "")
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        ]
    return found


@pytest.mark.parametrize(
    ("snippet", "name"),
    [
        pytest.param(s, name, marks=on_both(s, code), id=f"{s.id}::{name}")
        for s, name, code in documented_tests()
    ],
)
def test_documented_test_passes(
    request: pytest.FixtureRequest, snippet: Snippet, name: str
) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_snippet_{snippet.index}"}
    exec(compile(snippet.code, snippet.id, "exec"), namespace)
    fn = namespace[name]
    assert callable(fn)
    test: Callable[..., None] = fn
    kwargs = {p: request.getfixturevalue(p) for p in inspect.signature(test).parameters}
    test(**kwargs)


def test_the_exception_tree_lists_every_error() -> None:
    page = (ROOT / "docs" / "exceptions.md").read_text()
    tree = FENCE.search(page)
    assert tree is not None and tree.group(1) == "text"
    listed = set(re.findall(r"^[\s│├└─]*(\w+)", tree.group(2), re.M))
    errors = {
        name
        for name in hutch.__all__
        if isinstance(getattr(hutch, name), type)
        and issubclass(getattr(hutch, name), hutch.HutchError)
    }
    assert errors - listed == set(), "docs/exceptions.md misses these in its tree"
    assert listed - errors == set(), "docs/exceptions.md lists errors hutch does not export"


@pytest.mark.rabbitmq_only("lists a RabbitMQ node's queues and exchanges")
def test_the_snippets_leave_nothing_behind(programs: Programs, hutch_broker: Broker) -> None:
    # each run deletes what its snippet declared when it ends, passed or failed
    programs.finish("docs:")
    if not hutch_broker.supports_control:
        pytest.skip("listing the queues needs a broker hutch.testing started")
    left = leftovers(hutch_broker)
    with hutch.connect(hutch_broker.url) as conn:  # leave the broker clean even on failure
        ch = conn.channel()
        for entry in left:
            kind, name = entry.split(" ", 1)
            (ch.delete_queue if kind == "queue" else ch.delete_exchange)(name)
        ch.close()
    assert left == [], "the doc snippets left these on the broker"
