"""Pure logic of issue 12's CLI rows: library defaults shown in --help, hints, log formats."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hutch
from hutch._cli.app import JsonFormatter, _describe_error, build_parser, log_formatter
from hutch._cli.call import _argument
from hutch._cli.common import UsageError
from hutch._cli.output import broken_json
from hutch._exceptions import ConnectError, NotFound
from hutch._loading import load_callable


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _option(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    (action,) = [a for a in parser._actions if a.dest == dest]
    return action


def test_worker_defaults_are_the_librarys() -> None:
    worker = _subparsers(build_parser())["worker"]
    pool = inspect.signature(hutch.WorkerPool.__init__).parameters
    assert _option(worker, "concurrency").default == pool["concurrency"].default == 4
    assert _option(worker, "prefetch").default == pool["prefetch"].default
    assert _option(worker, "max_attempts").default == hutch.RetryPolicy().max_attempts


def test_other_defaults_are_the_librarys() -> None:
    commands = _subparsers(build_parser())
    sub = inspect.signature(hutch.Subscriber.__init__).parameters
    client = inspect.signature(hutch.RpcClient.__init__).parameters
    pub = inspect.signature(hutch.Publisher.__init__).parameters
    assert _option(commands["consume"], "prefetch").default == sub["prefetch"].default
    assert _option(commands["call"], "queue").default == client["queue"].default
    assert _option(commands["call"], "timeout").default == client["timeout"].default
    assert _option(commands["publish"], "timeout").default == pub["timeout"].default


def test_every_default_is_shown_in_help() -> None:
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        text = sub.format_help()
        for action in sub._actions:
            default = action.default
            if (
                not action.option_strings
                or action.nargs == 0  # a flag (--json sets format; the default is not its own)
                or default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._HelpAction)
            ):
                continue
            shown = action.help % {"default": default} if action.help else ""
            assert "default" in shown and str(default).rstrip("0").rstrip(".") in shown, (
                name,
                action.dest,
                shown,
            )
            assert shown.split("(default")[0][:20] in text.replace("\n", " ") or shown


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=8,
    )
)
def test_broken_json_is_silent_on_valid_json(value: object) -> None:
    assert broken_json(json.dumps(value).encode()) is None


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.integers() | st.text(),
        lambda c: st.lists(c, min_size=1) | st.dictionaries(st.text(), c, min_size=1),
        max_leaves=6,
    ).filter(lambda v: isinstance(v, (list, dict))),
    st.integers(1, 10),
)
def test_broken_json_names_a_truncated_document(value: object, cut: int) -> None:
    text = json.dumps(value)
    truncated = text[: max(1, len(text) - cut)]
    problem = broken_json(truncated.encode())
    assert problem is not None and "line 1 column" in problem


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1).filter(lambda t: not t.lstrip().startswith(("{", "["))))
def test_broken_json_leaves_plain_text_alone(text: str) -> None:
    assert broken_json(text.encode()) is None


@settings(max_examples=60, deadline=None)
@given(
    st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=12).filter(
        lambda w: w not in ("true", "false", "null", "NaN", "Infinity")
    )
)
def test_a_bare_word_gets_the_quoted_form(word: str) -> None:
    with pytest.raises(UsageError) as info:
        _argument(1, word)
    quoted = json.dumps(word, ensure_ascii=False)
    assert f"write '{quoted}'" in str(info.value)
    assert json.loads(quoted) == word  # the hint is valid JSON for that string
    assert _argument(1, quoted) == word


def test_a_non_amqp_port_is_one_clear_line() -> None:
    exc = ConnectError(
        "cannot connect to the broker: rabbit:15672: IncompatibleProtocolError: "
        "StreamLostError: ('Transport indicated EOF',)"
    )
    line = _describe_error(exc)
    assert line.startswith("cannot connect to the broker: rabbit:15672: this port does not speak")
    assert "StreamLostError" not in line
    plain = _describe_error(ConnectError("cannot connect to the broker: h:1: refused"))
    assert "does not speak AMQP" not in plain and "is RabbitMQ running there" in plain


def test_declare_gets_no_circular_hint() -> None:
    exc = NotFound(404, "NOT_FOUND - no exchange 'x' in vhost '/'")
    assert "hutch declare" in _describe_error(exc, "publish")
    assert "hutch declare" not in _describe_error(exc, "declare")


def test_log_formats() -> None:
    record = logging.LogRecord("hutch.task", logging.INFO, __file__, 1, "task %s ok", ("t1",), None)
    text = log_formatter("text").format(record)
    assert text.endswith(" INFO hutch.task: task t1 ok") and text[:4].isdigit()
    entry = json.loads(log_formatter("json").format(record))
    assert entry["message"] == "task t1 ok" and entry["logger"] == "hutch.task"
    assert entry["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_a_failing_import_inside_the_module_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "w12_pkg_unit.py").write_text("import json\n\nfrom w12_missing_dep import x\n")
    with pytest.raises(ValueError) as info:
        load_callable("w12_pkg_unit:run", what="handler")
    text = str(info.value)
    assert "w12_pkg_unit.py:3: from w12_missing_dep import x" in text
    assert "working directory" not in text
    with pytest.raises(ValueError, match="working directory"):
        load_callable("w12_not_there_at_all:run", what="handler")
    sys.modules.pop("w12_pkg_unit", None)
