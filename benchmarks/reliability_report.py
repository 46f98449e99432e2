"""Run the fault tests and write their numbers as the results table of docs/reliability.md.

Each fault test keeps a ledger of every message (sent, confirmed, received, dead-lettered,
duplicated, lost) and times every recovery from the connection's "lost" to its "restored"
event; with ``HUTCH_RELIABILITY_RESULTS`` set it appends one JSON line per scenario to that
file (see ``tests/reliability.py``). This script runs the fault test modules with that
variable pointing at a temporary file, then renders the lines as a Markdown table between
the ``<!-- results:start -->`` and ``<!-- results:end -->`` markers of
``docs/reliability.md``.

The fault tests start their own broker nodes (a restartable node, a TLS node and a local
3-node cluster), so no broker is needed beforehand; ``rabbitmq-server`` must be installed.

    python benchmarks/reliability_report.py            # run, then rewrite the table
    python benchmarks/reliability_report.py --print    # run, print the table only
    python benchmarks/reliability_report.py --from results.jsonl   # render saved results
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
RESULTS_ENV = "HUTCH_RELIABILITY_RESULTS"
MODULES = [
    "tests/integration/test_faults.py",
    "tests/integration/test_faults_workers.py",
    "tests/integration/test_cluster.py",
]


def run_tests(results: Path, extra: list[str]) -> tuple[int, float]:
    env = {**os.environ, RESULTS_ENV: str(results)}
    began = time.monotonic()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULES, *extra]
    print("running:", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=ROOT, env=env)
    return code, time.monotonic() - began


def load(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def rabbitmq_version() -> str:
    found = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*"))
    return found[-1].rsplit("-", 1)[-1] if found else "unknown"


def render(rows: list[dict[str, Any]], seconds: float | None) -> str:
    lines = [
        "| Scenario | Sent | Confirmed | Received | Dead-lettered | Duplicated | Lost "
        "| Recovery time | Notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        recovery = "—" if r["recovery_s"] is None else f"{r['recovery_s']:.2f} s"
        notes = r.get("notes") or ""
        if r.get("refused"):
            notes = f"{r['refused']} refused with a clear error. {notes}".strip()
        if r.get("recoveries", 0) > 1:
            notes = f"{r['recoveries']} connections recovered (longest shown). {notes}".strip()
        lines.append(
            f"| {r['scenario']} | {_num(r['sent'])} | {_num(r['confirmed'])} "
            f"| {_num(r['received'])} | {_num(r['dead_lettered'])} | {_num(r['duplicated'])} "
            f"| **{_num(r['lost'])}** | {recovery} | {notes} |"
        )
    try:
        hutch_version = metadata.version("hutch")
    except metadata.PackageNotFoundError:
        hutch_version = "source tree"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    took = f"; the fault tests took {seconds:.0f} s" if seconds is not None else ""
    lines += [
        "",
        f"*Measured {when} with `python benchmarks/reliability_report.py`: hutch "
        f"{hutch_version}, Python {platform.python_version()}, RabbitMQ {rabbitmq_version()}, "
        f"{os.cpu_count()} CPUs ({platform.system()} {platform.machine()}){took}. "
        "Received counts distinct message ids; duplicated counts extra deliveries of the same "
        "id; lost counts messages whose publish succeeded but that never reached a consumer "
        "or a dead-letter queue. Recovery time runs from the connection's `lost` event to "
        "its `restored` event.*",
    ]
    return "\n".join(lines)


def write(table: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} lacks the {START} / {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    print(f"wrote the table into {DOC.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table, do not write")
    parser.add_argument("--from", dest="source", type=Path, help="render saved JSON lines")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args()
    code, seconds = 0, None
    if args.source is not None:
        rows = load(args.source)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp) / "results.jsonl"
            results.touch()
            code, seconds = run_tests(results, args.pytest_args)
            rows = load(results)
    if not rows:
        print("no results recorded", file=sys.stderr)
        return code or 1
    table = render(rows, seconds)
    print(table)
    if code != 0:
        print(f"pytest exited {code}: the table is not written", file=sys.stderr)
        return code
    if not args.print:
        write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
