"""Run every benchmark against one broker and write docs/performance.md with a chart.

Each benchmark module next to this file (``publish``, ``consume``, ``fair_dispatch``,
``rpc``, ``scale_out``, ``cpu_memory``; a missing one is skipped) exposes
``run(url) -> dict`` returning::

    {"title": "Publishing (20000 x 100 B persistent)",
     "rows": [{"name": ..., "hutch": float, "baseline": float, "ratio": float,
               "unit": "msg/s", "baseline_name": "pika basic_publish",   # optional
               "target": 0.9,                                            # optional
               "lower_is_better": False}, ...],                          # optional
     "notes": ["..."]}                                                   # optional

A module that also has ``draw_chart(result, path) -> bool`` gets its own chart
(``docs/img/<module>.svg``) in its section instead of bars in the summary chart.

Every module runs against the same broker: ``--url``, else ``HUTCH_URL``, else one throwaway
broker from :func:`hutch.testing.throwaway_broker` for the whole run. The results are
printed, saved as JSON (``benchmarks/results.json``), rendered as Markdown tables into
``docs/performance.md`` and drawn as a chart of the ratios (``docs/img/performance.svg``).

    python benchmarks/run_all.py [--url amqp://...] [--only publish,consume]
    python benchmarks/run_all.py --smoke      # tiny counts: checks that all of it works
    nox -s bench

Counts scale with ``$HUTCH_BENCH_SCALE`` (``--smoke`` sets it to a tiny factor and writes
nothing unless ``--output`` / ``--chart`` / ``--json`` are given).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODULES = ["publish", "consume", "fair_dispatch", "rpc", "scale_out", "cpu_memory"]

DEFAULT_OUTPUT = ROOT / "docs" / "performance.md"
DEFAULT_CHART = ROOT / "docs" / "img" / "performance.svg"
DEFAULT_JSON = HERE / "results.json"
# --smoke: tiny counts for the modules that take them as arguments (the others read
# $HUTCH_BENCH_SCALE themselves)
SMOKE_ARGS: dict[str, dict[str, int]] = {
    "publish": {"messages": 500, "repeats": 1},
    "consume": {"messages": 500, "repeats": 1},
    "fair_dispatch": {"tasks": 100, "empty": 300, "repeats": 1},
}


@contextlib.contextmanager
def _broker(url: str | None) -> Iterator[tuple[str, str]]:
    url = url or os.environ.get("HUTCH_URL")
    if url:
        yield url, "an existing broker (--url / HUTCH_URL)"
        return
    from hutch.testing import throwaway_broker

    started = time.monotonic()
    with throwaway_broker() as broker_url:
        print(f"broker ready in {time.monotonic() - started:.1f} s", flush=True)
        yield broker_url, "a throwaway broker started for the run (hutch.testing)"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a result; adapts results that only report ``ratios`` (rpc.py)."""
    rows = result.get("rows")
    if isinstance(rows, list):
        return [r for r in rows if isinstance(r, dict)]
    if isinstance(result.get("fair_dispatch"), dict):
        return _fair_dispatch_rows(result)
    ratios = result.get("ratios")
    if not isinstance(ratios, dict):
        return []
    targets = result.get("targets") or {}
    out = []
    metrics = {
        # ratio key: (metric, baseline kind, unit, label, lower is better)
        "p50_vs_pika": ("p50_ms", "pika", "ms", "sequential call, p50 latency", True),
        "flight_vs_pika": ("flight_calls_per_s", "pika", "calls/s", "calls in flight", False),
        "flight_vs_aio": ("flight_calls_per_s", "aio_pika", "calls/s", "calls in flight", False),
    }
    for key, ratio in ratios.items():
        metric, kind, unit, label, lower = metrics.get(key, (key, "?", "", key, False))
        hutch_figures = result.get("hutch") or {}
        base_figures = result.get(kind) or {}
        out.append(
            {
                "name": label,
                "hutch": float(hutch_figures.get(metric, math.nan)),
                "baseline": float(base_figures.get(metric, math.nan)),
                "baseline_name": kind.replace("_", "-"),
                "ratio": float(ratio),
                "unit": unit,
                "target": targets.get(key),
                "lower_is_better": lower,
            }
        )
    return out


def _fair_dispatch_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for fair_dispatch.py's figures: makespans (lower is better) and throughput."""
    fair = result["fair_dispatch"]
    contenders = {k: v for k, v in fair.items() if isinstance(v, dict) and "makespan_s" in v}
    hutch_name = next((k for k in contenders if k.startswith("hutch")), None)
    out: list[dict[str, Any]] = []
    if hutch_name is not None:
        ours = float(contenders[hutch_name]["makespan_s"])
        ideal = fair.get("ideal_s")
        if isinstance(ideal, (int, float)) and ideal > 0:
            out.append(
                {
                    "name": f"skewed tasks, makespan vs ideal ({fair.get('tasks', '?')} tasks)",
                    "hutch": ours,
                    "baseline": float(ideal),
                    "baseline_name": "ideal: max(sum of durations / workers, longest task)",
                    "ratio": ours / float(ideal),
                    "unit": "s",
                    "target": 1.10,
                    "lower_is_better": True,
                }
            )
        for name, figures in contenders.items():
            if name == hutch_name:
                continue
            theirs = float(figures["makespan_s"])
            out.append(
                {
                    "name": f"skewed tasks, makespan ({fair.get('tasks', '?')} tasks)",
                    "hutch": ours,
                    "baseline": theirs,
                    "baseline_name": name,
                    "ratio": ours / theirs if theirs else math.nan,
                    "unit": "s",
                    "target": None,
                    "lower_is_better": True,
                }
            )
    empty = result.get("empty_task_throughput")
    if isinstance(empty, dict) and "hutch_msgs_per_s" in empty:
        out.append(
            {
                "name": f"empty tasks, concurrency {empty.get('concurrency', '?')}",
                "hutch": float(empty["hutch_msgs_per_s"]),
                "baseline": float(empty.get("pika_msgs_per_s", math.nan)),
                "baseline_name": "hand-written pika",
                "ratio": float(empty.get("ratio", math.nan)),
                "unit": "msg/s",
                "target": 0.90,
            }
        )
    return out


def _verdict(row: dict[str, Any]) -> str:
    target = row.get("target")
    ratio = row.get("ratio", math.nan)
    if target is None or not isinstance(ratio, (int, float)) or math.isnan(ratio):
        return ""
    if row.get("lower_is_better"):
        return "met" if ratio <= target else "missed"
    return "met" if ratio >= target else "missed"


def _fmt(value: Any, unit: str = "") -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    if unit == "ms" or abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def run_all(url: str, only: list[str], *, smoke: bool = False) -> dict[str, Any]:
    """Run the benchmark modules against ``url``; return their results by module name."""
    sys.path.insert(0, str(HERE))
    results: dict[str, Any] = {}
    for name in only:
        if not (HERE / f"{name}.py").exists():
            print(f"--- {name}: benchmarks/{name}.py does not exist, skipped", flush=True)
            continue
        print(f"--- {name}", flush=True)
        started = time.monotonic()
        try:
            module = importlib.import_module(name)
            run = getattr(module, "run", None)
            if not callable(run):
                raise TypeError(f"benchmarks/{name}.py has no run(url) function")
            result = run(url, **(SMOKE_ARGS.get(name, {}) if smoke else {}))
            if not isinstance(result, dict):
                raise TypeError(f"{name}.run() returned {type(result).__name__}, not a dict")
        except Exception as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - started, 1)
        results[name] = result
        for row in _rows_of(result):
            print(
                f"  {row['name']:<46} hutch {_fmt(row['hutch'])} {row['unit']}, "
                f"{row.get('baseline_name', 'baseline')} {_fmt(row['baseline'])}, "
                f"ratio {_fmt(row['ratio'])} {_verdict(row)}",
                flush=True,
            )
    return results


def draw_module_charts(results: dict[str, Any], directory: Path) -> None:
    """Let each module with a ``draw_chart`` draw its own figures to ``<directory>/<name>.svg``."""
    for name, result in results.items():
        draw = getattr(sys.modules.get(name), "draw_chart", None)
        if not callable(draw) or "error" in result:
            continue
        path = directory / f"{name}.svg"
        try:
            if draw(result, path):
                result["chart"] = str(path)
        except Exception:
            traceback.print_exc()


def draw_chart(results: dict[str, Any], path: Path) -> bool:
    """Draw the ratios as horizontal bars with their targets; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return False
    labels: list[str] = []
    ratios: list[float] = []
    targets: list[float | None] = []
    colors: list[str] = []
    for name, result in results.items():
        if callable(getattr(sys.modules.get(name), "draw_chart", None)):
            continue  # it draws its own chart
        for row in _rows_of(result):
            ratio = row.get("ratio", math.nan)
            if not isinstance(ratio, (int, float)) or math.isnan(ratio):
                continue
            lower = " (lower is better)" if row.get("lower_is_better") else ""
            labels.append(
                f"{name}: {row['name']}\nvs {row.get('baseline_name', 'baseline')}{lower}"
            )
            ratios.append(float(ratio))
            targets.append(row.get("target"))
            verdict = _verdict(row)
            colors.append({"met": "#2e7d32", "missed": "#c62828"}.get(verdict, "#546e7a"))
    if not labels:
        return False
    plt.rcParams["svg.hashsalt"] = "hutch"  # stable ids: the SVG only changes with the data
    height = 0.6 * len(labels) + 1.2
    fig, ax = plt.subplots(figsize=(9, height))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, ratios, color=colors, height=0.6)
    for y, ratio, target in zip(ys, ratios, targets, strict=True):
        ax.text(ratio + 0.02, y, f"{ratio:.2f}", va="center", fontsize=9)
        if target is not None:
            ax.plot([target, target], [y - 0.4, y + 0.4], color="black", linewidth=2)
    ax.axvline(1.0, color="#9e9e9e", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("hutch / baseline (black tick: target; green: met, red: missed)")
    ax.set_xlim(0, max([*ratios, *(t for t in targets if t is not None), 1.0]) * 1.15)
    ax.set_title("hutch relative to the baseline, same broker, same run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg", metadata={"Date": None})
    plt.close(fig)
    return True


KEPT_START = "<!-- hand-written: kept by run_all.py when it regenerates this page -->"
KEPT_END = "<!-- end of hand-written part -->"


def kept_part(page: str) -> str:
    """The hand-written part of an existing page (markers included), or ``""``."""
    start, end = page.find(KEPT_START), page.find(KEPT_END)
    if start < 0 or end < start:
        return ""
    return page[start : end + len(KEPT_END)]


def render(
    results: dict[str, Any], *, broker: str, chart: Path | None, output: Path, kept: str = ""
) -> str:
    """The Markdown of the performance page (``kept``: a hand-written part, before the end)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `nox -s bench` (benchmarks/run_all.py) from an actual run.",
        "     Edit benchmarks/run_all.py, not this file. -->",
        "",
        "hutch adds typing, validation, publisher confirms, a thread that keeps the connection",
        "alive, and automatic recovery on top of pika. These benchmarks measure what that costs:",
        "each compares hutch with a hand-written baseline (raw pika, or aio-pika) doing the",
        "same work **against the same broker in the same run**, so the ratio is meaningful even",
        "where the absolute figures depend on the machine. Each figure is the median of",
        "several repeats.",
        "",
        f"Measured {now} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"hutch {_version('hutch')}, pika {_version('pika')}, "
        f"aio-pika {_version('aio-pika')}; broker: {broker}.",
        "",
    ]
    if chart is not None:
        rel = os.path.relpath(chart, output.parent).replace(os.sep, "/")
        lines += [f"![hutch relative to the baselines]({rel})", ""]
    for name, result in results.items():
        title = result.get("title") or name.replace("_", " ").capitalize()
        lines += [f"## {title}", ""]
        doc = _module_doc(name)
        if doc:
            lines += [doc, ""]
        if "error" in result:
            lines += [f"This benchmark failed in this run: `{result['error']}`.", ""]
            continue
        if result.get("chart"):
            rel = os.path.relpath(result["chart"], output.parent).replace(os.sep, "/")
            lines += [f"![{title}]({rel})", ""]
        rows = _rows_of(result)
        if rows:
            lines += [
                "| Benchmark | hutch | baseline | ratio | target |",
                "|---|---:|---:|---:|---|",
            ]
            for row in rows:
                unit = row.get("unit", "")
                target = row.get("target")
                sign = "≤" if row.get("lower_is_better") else "≥"
                target_text = "" if target is None else f"{sign} {target:.2f} ({_verdict(row)})"
                lines.append(
                    f"| {row['name']} | {_fmt(row['hutch'], unit)} {unit} "
                    f"| {_fmt(row['baseline'], unit)} {unit} ({row.get('baseline_name', '')}) "
                    f"| {_fmt(row['ratio'])} | {target_text} |"
                )
            lines.append("")
        notes = result.get("notes")
        if isinstance(notes, list) and notes:
            lines += [*(f"- {note}" for note in notes), ""]
        skip = ("rows", "title", "seconds", "notes", "chart")
        extra = {k: v for k, v in result.items() if k not in skip}
        if extra:
            lines += [
                '??? note "All figures"',
                "",
                "    ```json",
                *("    " + line for line in json.dumps(extra, indent=2, default=str).splitlines()),
                "    ```",
                "",
            ]
        lines += [f"*Run time: {result.get('seconds', '?')} s.*", ""]
    if kept:
        lines += [kept, ""]
    lines += [
        "## Reproducing",
        "",
        "```console",
        "$ python -m pip install nox && nox -s bench",
        "$ HUTCH_URL=amqp://guest:guest@localhost:5672/ python benchmarks/run_all.py",
        "$ python benchmarks/publish.py --messages 50000     # one benchmark alone",
        "```",
        "",
        "`nox -s bench` regenerates this page and its chart. Run it on an otherwise idle",
        "machine: the client and the broker share the CPUs.",
        "",
    ]
    return "\n".join(lines)


def _module_doc(name: str) -> str:
    module = sys.modules.get(name)
    doc = (getattr(module, "__doc__", None) or "").strip()
    if not doc:
        return ""
    # the first paragraph, with reST double backticks turned into Markdown code spans
    return doc.split("\n\n", 1)[0].replace("``", "`").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--url", help="broker URL (default: $HUTCH_URL, else a throwaway one)")
    parser.add_argument(
        "--only", default=",".join(MODULES), help=f"modules to run (default {','.join(MODULES)})"
    )
    parser.add_argument("--output", type=Path, default=None, help=f"default {DEFAULT_OUTPUT}")
    parser.add_argument("--chart", type=Path, default=None, help=f"default {DEFAULT_CHART}")
    parser.add_argument("--json", type=Path, default=None, help=f"default {DEFAULT_JSON}")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts (HUTCH_BENCH_SCALE); writes only the files given explicitly",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        sys.path.insert(0, str(HERE))
        from _common import set_smoke

        set_smoke()
    else:
        args.output = args.output or DEFAULT_OUTPUT
        args.chart = args.chart or DEFAULT_CHART
        args.json = args.json or DEFAULT_JSON
    only = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = sorted(set(only) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark modules {unknown}; known: {', '.join(MODULES)}")
    with _broker(args.url) as (url, broker):
        results = run_all(url, only, smoke=args.smoke)
    if not results:
        print("no benchmark ran", file=sys.stderr)
        return 1
    written: list[str] = []
    if args.chart is not None:
        draw_module_charts(results, args.chart.parent)
        written += [str(r["chart"]) for r in results.values() if r.get("chart")]
    chart = args.chart if args.chart is not None and draw_chart(results, args.chart) else None
    if chart is not None:
        written.append(str(chart))
    if args.output is not None:
        old = args.output.read_text() if args.output.exists() else ""
        output = render(
            results, broker=broker, chart=chart, output=args.output, kept=kept_part(old)
        )
        args.output.write_text(output)
        written.append(str(args.output))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        written.append(str(args.json))
    print(f"wrote {', '.join(written)}" if written else "wrote nothing (--smoke)")
    failed = [name for name, result in results.items() if "error" in result]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
