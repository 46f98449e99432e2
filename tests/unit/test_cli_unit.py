"""The command line without a broker: parsing, bodies, topology files, help and errors."""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import io
import json
import logging
import re
import sys
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import hutch
from hutch import _cli
from hutch._cli import (
    BINARY_TYPE,
    JSON_TYPE,
    TEXT_TYPE,
    MessagePrinter,
    UsageError,
    display_body,
    encode_body,
    load_topology,
    main,
    parse_pairs,
    parse_properties,
    to_jsonable,
)
from hutch._cli.declare import parse_topology
from hutch._message import Message, Properties

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("hutch: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --------------------------------------------------------------------------- headers, properties


def test_pairs_are_strings_unless_typed_with_colon_equals() -> None:
    assert parse_pairs(
        ["format=pdf", "pages:=3", "urgent:=true", "empty=", "eq=a=b"], what="h"
    ) == {
        "format": "pdf",
        "pages": 3,
        "urgent": True,
        "empty": "",
        "eq": "a=b",
    }
    assert parse_pairs(None, what="h") == {}


@pytest.mark.parametrize(
    ("item", "message"),
    [("novalue", "KEY=VALUE"), ("=x", "empty name"), ("n:={bad", "not valid JSON")],
)
def test_bad_pairs_are_usage_errors(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_pairs([item], what="header")


def test_properties_are_converted_by_name() -> None:
    props = parse_properties(
        ["correlation-id=c1", "priority=5", "delivery_mode=1", "timestamp=0", "expiration=60000"]
    )
    assert props == {
        "correlation_id": "c1",
        "priority": 5,
        "delivery_mode": 1,
        "timestamp": dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
        "expiration": "60000",
    }
    noon = dt.datetime(2026, 1, 31, 12, tzinfo=dt.timezone.utc)
    for text in ["2026-01-31T12:00:00", "2026-01-31T12:00:00Z", "2026-01-31T13:00:00+01:00"]:
        assert parse_properties([f"timestamp={text}"])["timestamp"] == noon, text


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("colour=red", "unknown property 'colour'"),
        ("headers=x", "-H KEY=VALUE"),
        ("priority=high", "whole number"),
        ("timestamp=yesterday", "ISO 8601"),
        ("priority", "NAME=VALUE"),
    ],
)
def test_bad_properties_are_usage_errors(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_properties([item])


# --------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("data", "fmt", "content_type"),
    [
        (b'{"id": 1}', "auto", JSON_TYPE),
        (b"42", "auto", JSON_TYPE),
        (b"hello", "auto", TEXT_TYPE),
        (b"\xff\x00", "auto", BINARY_TYPE),
        (b'{"id": 1}', "json", JSON_TYPE),
        (b'{"id": 1}', "text", TEXT_TYPE),
        (b"\xff", "raw", BINARY_TYPE),
        (b"hello", "raw", BINARY_TYPE),
    ],
)
def test_body_formats(data: bytes, fmt: str, content_type: str) -> None:
    assert encode_body(data, fmt) == (data, content_type)


def test_bad_bodies_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not valid JSON: Expecting"):
        encode_body(b"{bad", "json")
    with pytest.raises(UsageError, match="not valid UTF-8"):
        encode_body(b"\xff", "text")


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        (b'{"a": [1, 2]}', "application/json", ("json", {"a": [1, 2]})),
        (b"[1]", None, ("json", [1])),
        (b"not json", "application/json", ("text", "not json")),
        (b"hello", "text/plain; charset=utf-8", ("text", "hello")),
        (b"42", "text/plain", ("text", "42")),
        (
            b"\xff\x00",
            "application/octet-stream",
            ("base64", base64.b64encode(b"\xff\x00").decode()),
        ),
    ],
)
def test_display_body(raw: bytes, content_type: str | None, expected: tuple[str, object]) -> None:
    assert display_body(raw, content_type) == expected


class Point(BaseModel):
    x: int


def test_to_jsonable_handles_amqp_values() -> None:
    value = {
        "b": b"text",
        "bin": b"\xff",
        "when": dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc),
        "n": Decimal("1.5"),
        "nested": [{"t": (1, 2)}],
        "model": Point(x=1),
    }
    assert json.loads(json.dumps(to_jsonable(value))) == {
        "b": "text",
        "bin": "/w==",
        "when": "2026-01-02T00:00:00+00:00",
        "n": 1.5,
        "nested": [{"t": [1, 2]}],
        "model": {"x": 1},
    }


def make_message(body: bytes, content_type: str | None) -> Message[bytes]:
    return Message(
        body=body,
        raw_body=body,
        properties=Properties(
            content_type=content_type, headers={"n": 3, "b": b"x"}, message_id="m1", priority=2
        ),
        exchange="ex",
        routing_key="a.b",
        redelivered=True,
    )


def test_json_lines_record() -> None:
    out = io.StringIO()
    MessagePrinter(out, json_lines=True).show(1, make_message(b'{"id": 1}', JSON_TYPE))
    record = json.loads(out.getvalue())
    assert record == {
        "exchange": "ex",
        "routing_key": "a.b",
        "redelivered": True,
        "headers": {"n": 3, "b": "x"},
        "properties": {"content_type": JSON_TYPE, "message_id": "m1", "priority": 2},
        "body": {"id": 1},
        "body_encoding": "json",
    }


def test_plain_output_without_rich() -> None:
    out = io.StringIO()  # not a terminal: never rich
    MessagePrinter(out, json_lines=False).show(7, make_message(b"hello", TEXT_TYPE))
    head, body = out.getvalue().splitlines()
    assert head.startswith("#7 ex -> a.b headers=")
    assert "redelivered" in head and TEXT_TYPE in head
    assert body == "hello"


def test_pretty_output_with_rich() -> None:
    pytest.importorskip("rich", reason="the cli extra (rich) is not installed")
    out = io.StringIO()
    MessagePrinter(out, json_lines=False, pretty=True).show(1, make_message(b"[1, 2]", JSON_TYPE))
    text = out.getvalue()
    assert "#1 ex -> a.b" in text and "1," in text


# --------------------------------------------------------------------------- topology files

TOML = """
[[exchanges]]
name = "orders"
type = "topic"

[[queues]]
name = "audit"
message_ttl = 60
queue_type = "quorum"

[[bindings]]
exchange = "orders"
queue = "audit"
routing_key = ["order.*", "refund.#"]

[[bindings]]
exchange = "docs"
queue = "audit"
headers = { format = "pdf" }
match = "any"
"""


def test_toml_topology(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(TOML)
    items = load_topology(path).items()
    exchange, queue, *bindings = items
    assert exchange == hutch.Exchange("orders", type="topic")
    assert isinstance(queue, hutch.Queue)
    assert queue.arguments == {"x-message-ttl": 60000, "x-queue-type": "quorum"}
    assert queue.durable and not queue.exclusive
    assert [(b.exchange_name, b.routing_key) for b in bindings if isinstance(b, hutch.Binding)] == [
        ("orders", "order.*"),
        ("orders", "refund.#"),
        ("docs", ""),
    ]
    headers_binding = bindings[-1]
    assert isinstance(headers_binding, hutch.Binding)
    assert headers_binding.binding_arguments == {"x-match": "any", "format": "pdf"}


def test_yaml_topology(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML is optional and not installed")
    path = tmp_path / "topology.yml"
    path.write_text("exchanges:\n  - {name: logs, type: fanout}\nqueues:\n  - name: all-logs\n")
    assert [type(i).__name__ for i in load_topology(path).items()] == ["Exchange", "Queue"]


def test_yaml_without_pyyaml_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def no_yaml(name: str, package: str | None = None) -> ModuleType:
        if name == "yaml":
            raise ImportError("No module named 'yaml'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_yaml)
    path = tmp_path / "t.yaml"
    path.write_text("queues: []\n")
    with pytest.raises(UsageError, match=r"pip install pyyaml"):
        load_topology(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[queues]]\nname = "q"\nmax_lenght = 3\n', "queues[0].max_lenght: Extra inputs"),
        ('[[exchanges]]\nname = "e"\ntype = "fanoutt"\n', "exchanges[0].type: Input should be"),
        ("[[queues]]\ndurable = true\n", "queues[0].name: Field required"),
        ("[[queues]\n", "invalid TOML"),
        ('[[bindings]]\nexchange = "e"\nqueue = "q"\nmatch = "most"\n', "bindings[0].match"),
        ('[[queues]]\nname = "q"\nqueue_type = "quorum"\nauto_delete = true\n', "quorum"),
    ],
)
def test_bad_topology_files_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        load_topology(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[queues]]\nname = "q"\nexclusive = true\n', "queues[0]: a declared queue must be named"),
        ('[[queues]]\nname = ""\n', "queues[0]: a declared queue must be named"),
        ('[[exchanges]]\nname = ""\n', "exchanges[0].name: the default exchange"),
        ('[[queue]]\nname = "q"\n', "queue: Extra inputs are not permitted"),
        ('queues = {name = "q"}\n', "queues: Input should be a valid list"),
        ("queues = [1]\n", "queues[0]: Input should be a table"),
        ('[[queues]]\nname = "q"\nmax_length = 1.5\n', "queues[0].max_length: Input should be"),
        (
            '[[bindings]]\nexchange = "e"\nqueue = "q"\nrouting_key = ["a", 1]\n',
            "bindings[0].routing_key[1]: Input should be a valid string",
        ),
        (
            '[[bindings]]\nexchange = "e"\nqueue = "q"\nroutin_key = "a"\n',
            "bindings[0].routin_key: Extra inputs are not permitted; the allowed keys are "
            "exchange, queue, routing_key, headers, match, arguments",
        ),
    ],
)
def test_topology_rules_come_from_the_topology_classes(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        load_topology(path)


def test_topology_entries_are_the_to_dict_form(tmp_path: Path) -> None:
    # what to_dict() writes, hutch declare reads back (JSON is valid YAML)
    pytest.importorskip("yaml", reason="PyYAML is optional and not installed")
    exchange = hutch.Exchange("orders", "topic", arguments={"alternate-exchange": "lost"})
    queue = hutch.Queue("audit", message_ttl=60, max_priority=5, queue_type="classic")
    binding = hutch.Binding("orders", "audit", routing_key="order.*")
    data = {
        "exchanges": [exchange.to_dict()],
        "queues": [queue.to_dict()],
        "bindings": [binding.to_dict()],
    }
    path = tmp_path / "topology.yaml"
    path.write_text(json.dumps(data))
    read_exchange, read_queue, read_binding = load_topology(path).items()
    assert read_exchange == exchange and read_binding == binding
    assert isinstance(read_queue, hutch.Queue) and read_queue.to_dict() == queue.to_dict()


HOSTILE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["topic", "headers", "quorum", "drop-head", "any", "amq.x", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
ENTRY_KEYS = sorted(
    {*hutch.Exchange("e").to_dict(), *hutch.Queue("q").to_dict(), "max_length", "expires"}
    | {"message_ttl", "max_priority", "queue_type", "overflow", "exchange", "queue", "headers"}
    | {"routing_key", "match", "x"}
)
ENTRIES = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8)},
    optional={key: HOSTILE_VALUES for key in ENTRY_KEYS if key != "name"},
)
SECTIONS = st.dictionaries(
    st.sampled_from(["exchanges", "queues", "bindings"]),
    st.lists(ENTRIES | HOSTILE_VALUES, max_size=3) | HOSTILE_VALUES,
)


@settings(max_examples=60, deadline=None)
@given(SECTIONS | HOSTILE_VALUES)
@example({"queues": [{"name": "q", "message_ttl": 1e300}]})
def test_any_parsed_file_gives_a_topology_or_one_usage_error(data: object) -> None:
    try:
        topology = parse_topology(data)
    except UsageError as exc:
        message = str(exc)
    else:
        message = ""
        for item in topology.items():
            assert isinstance(item, (hutch.Exchange, hutch.Queue, hutch.Binding))
            assert _cli._describe(item)  # settings that print (and encode) as the broker needs
            if isinstance(item, hutch.Queue):  # numbers the AMQP encoder can send (signed 64-bit)
                typed = {k: v for k, v in item.arguments.items() if k not in item.extra_arguments}
                assert all(
                    isinstance(v, str) or (isinstance(v, int) and 0 <= v < 2**63)
                    for v in typed.values()
                ), typed
    assert "\n" not in message


def test_topology_format_from_suffix(tmp_path: Path) -> None:
    path = tmp_path / "topology.txt"
    path.write_text("")
    with pytest.raises(UsageError, match="--format"):
        load_topology(path)
    assert load_topology(path, "toml").items() == []


def fenced_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)


def test_the_topology_examples_in_the_docs_are_valid(tmp_path: Path) -> None:
    page = ROOT / "docs" / "cli.md"
    toml_blocks = fenced_blocks(page, "toml")
    assert toml_blocks, "docs/cli.md shows a TOML topology"
    for i, block in enumerate(toml_blocks):
        path = tmp_path / f"doc{i}.toml"
        path.write_text(block)
        assert load_topology(path).items()
    yaml_blocks = fenced_blocks(page, "yaml")
    assert yaml_blocks, "docs/cli.md shows a YAML topology"
    if importlib.util.find_spec("yaml") is not None:
        for i, block in enumerate(yaml_blocks):
            path = tmp_path / f"doc{i}.yaml"
            path.write_text(block)
            described = [_cli._describe(item) for item in load_topology(path).items()]
            toml_path = tmp_path / "doc0.toml"
            assert described == [_cli._describe(item) for item in load_topology(toml_path).items()]


# --------------------------------------------------------------------------- main


def test_help_everywhere_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["publish"], ["consume"], ["call"], ["declare"], ["worker"], ["serve"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: hutch"), command
        assert "examples:" in out and "--url" in out, command


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"hutch {hutch.__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 2 and "commands:" in err and out == ""


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["publish", "--colour", "x"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --colour" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["publish", "amq.topic", "k", "{bad", "--json"], ["the body is not valid JSON"]),
        (["publish", "amq.topic", "k", "x", "-H", "nokey"], ["KEY=VALUE"]),
        (["publish", "amq.topic", "k", "x", "-p", "colour=red"], ["unknown property 'colour'"]),
        (["publish", "amq.topic", "k", "x", "--mandatory", "--no-confirm"], ["needs confirms"]),
        (["consume"], ["give an EXCHANGE"]),
        (["consume", "amq.topic", "-k", "a", "-H", "x=1"], ["not both"]),
        (["consume", "--queue", "q", "-k", "a"], ["give the EXCHANGE too"]),
        (["call", "add", "1", "{bad"], ["argument 2", "not valid JSON"]),
        (["call", "add", "--kwargs", "[1]"], ["JSON object"]),
        (["worker", "no_such_module_xyz:handle", "--queue", "q"], ["cannot load handler"]),
        (["worker", "badspec", "--queue", "q"], ["package.module:function"]),
        (["serve", "no_such_module_xyz:server"], ["cannot load server", "no_such_module_xyz"]),
        (["serve", "json:dumps"], ["not an RpcServer"]),
        (["--url", "http://localhost/", "publish", "x", "k", "b"], ["invalid broker URL"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    code, out, err = run(capsys, "--url", CLOSED_PORT_URL, *argv)
    assert code == 2, err
    assert_one_error_line(err, *fragments)
    assert out == ""


def test_declare_dry_run_needs_no_broker(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "topology.toml"
    path.write_text(TOML)
    code, out, err = run(capsys, "--url", CLOSED_PORT_URL, "declare", str(path), "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        "would declare exchange 'orders' (topic, durable)",
        "would declare queue 'audit' (durable, x-message-ttl=60000, x-queue-type=\"quorum\")",
        "would declare binding 'orders' -> 'audit' with key 'order.*'",
        "would declare binding 'orders' -> 'audit' with key 'refund.#'",
        "would declare binding 'docs' -> 'audit' with headers {\"format\": \"pdf\"} (x-match any)",
    ]


def test_declare_of_an_empty_file_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("# nothing yet\n")
    code, _, err = run(capsys, "declare", str(path), "--dry-run")
    assert code == 2
    assert_one_error_line(err, "declares nothing")


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "amq.topic", "k", "hello"],
        ["consume", "amq.topic", "-k", "#", "--count", "1"],
        ["call", "add", "1", "2"],
    ],
)
def test_broker_down_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, "--url", CLOSED_PORT_URL, *argv)
    assert code == 1
    assert_one_error_line(err, "cannot connect to the broker", "127.0.0.1:1", "HUTCH_URL")
    assert out == ""


def test_url_from_environment_and_options_after_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUTCH_URL", CLOSED_PORT_URL)
    code, _, err = run(capsys, "publish", "amq.topic", "k", "x")
    assert code == 1 and "127.0.0.1:1" in err
    # --url after the command name overrides the environment
    code, _, err = run(capsys, "publish", "amq.topic", "k", "x", "--url", "amqp://u:p@127.0.0.1:2/")
    assert code == 1 and "127.0.0.1:2" in err
    assert "p@" not in err  # the password is never printed


def test_verbose_logs_and_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-vv", "--url", CLOSED_PORT_URL, "publish", "amq.topic", "k", "x")
    assert code == 1
    assert err.rstrip().splitlines()[-1].startswith("hutch: error: cannot connect")
    assert "Traceback" in err  # -vv shows it, for bug reports


def test_stdin_body(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{not json\n")))
    code, _, err = run(capsys, "--url", CLOSED_PORT_URL, "publish", "x", "k", "--json")
    assert code == 2
    assert_one_error_line(err, "not valid JSON")


def test_python_dash_m_hutch_is_the_same_command() -> None:
    module = importlib.import_module("hutch.__main__")
    assert module.main is main


def test_run_cli_runs_in_process_and_leaves_logging_as_it_was(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from hutch.testing import run_cli

    path = tmp_path / "topology.toml"
    path.write_text('[[queues]]\nname = "jobs"\n')
    loggers = [logging.getLogger(name) for name in ("", "hutch", "pika")]
    before = [(lg.level, list(lg.handlers)) for lg in loggers]
    assert run_cli("declare", str(path), "--dry-run") == 0  # prints, never connects
    assert capsys.readouterr().out == "would declare queue 'jobs' (durable)\n"
    assert [(lg.level, list(lg.handlers)) for lg in loggers] == before
    assert run_cli("declare", "--no-such-option") == 2  # argparse's exit, returned
    assert "hutch declare: error:" in capsys.readouterr().err
    assert run_cli("--help") == 0
    assert "declare" in capsys.readouterr().out
    with pytest.raises(TypeError, match="as strings, one each"):
        run_cli("consume", "jobs", "--count", 2)  # type: ignore[arg-type]
