"""Shared helpers for the benchmarks: broker URL, timing, table printing."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def broker_url(cli_url: str | None) -> Iterator[str]:
    """--url, else HUTCH_URL, else a throwaway local broker for the run."""
    url = cli_url or os.environ.get("HUTCH_URL")
    if url:
        yield url
        return
    from hutch.testing import acquire_broker

    with acquire_broker() as broker:
        yield broker.url


def interleaved(repeats: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run every contender once per round, `repeats` rounds; return each one's median.

    Taking turns spreads the drift of a shared machine over all contenders, so the ratios
    stay meaningful even when the absolute figures move between rounds.
    """
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            results[name].append(fn())
    return {name: statistics.median(values) for name, values in results.items()}


def rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def row(
    name: str, hutch: float, baseline: float, baseline_name: str, unit: str, target: float | None
) -> dict[str, Any]:
    return {
        "name": name,
        "hutch": hutch,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": hutch / baseline if baseline else float("nan"),
        "unit": unit,
        "target": target,
    }


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(f"{'benchmark':44} {'hutch':>12} {'baseline':>12}  {'ratio':>6}  target  baseline is")
    for r in rows:
        target = f">={r['target']:.2f}" if r["target"] is not None else "   -  "
        ok = "" if r["target"] is None else ("ok" if r["ratio"] >= r["target"] else "MISS")
        print(
            f"{r['name']:44} {r['hutch']:>10.0f} {r['unit'][:5]:<1} {r['baseline']:>10.0f}   {r['ratio']:>6.2f}  {target} {ok:4} {r['baseline_name']}"
        )


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", help="broker URL (default: $HUTCH_URL, else a throwaway local node)")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    return p


# --------------------------------------------------------------------- run size and machine
SCALE_ENV = "HUTCH_BENCH_SCALE"
SMOKE_SCALE = 0.01


def bench_scale() -> float:
    """The factor on every count, from ``$HUTCH_BENCH_SCALE`` (default 1: full size).

    ``HUTCH_BENCH_SCALE=0.05`` runs every benchmark that honours it at 5 % of its counts:
    a quick run that shows the benchmark works, not figures to publish.
    """
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(
            f"{SCALE_ENV}={raw!r} is not a number (e.g. 0.05 for a quick run)"
        ) from None
    if not 0 < value <= 100 or value != value:
        raise SystemExit(f"{SCALE_ENV}={raw!r} must be a number in (0, 100], e.g. 0.05")
    return value


def scaled(count: int, minimum: int = 1) -> int:
    """``count`` times :func:`bench_scale`, at least ``minimum``."""
    return max(minimum, round(count * bench_scale()))


def set_smoke() -> None:
    """Smoke mode: tiny counts (``HUTCH_BENCH_SCALE``), for this process and its children."""
    os.environ[SCALE_ENV] = str(SMOKE_SCALE)


def is_smoke() -> bool:
    return bench_scale() <= SMOKE_SCALE


class CpuSampler:
    """The share of all CPUs busy (any process, broker included) between start and stop.

    Reads ``/proc/stat``; ``busy`` is None where that file does not exist.
    """

    def __init__(self) -> None:
        self._start: tuple[int, int] | None = None
        self.busy: float | None = None

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] <= self._start[0]:
            self.busy = None
        else:
            total, idle = end[0] - self._start[0], end[1] - self._start[1]
            self.busy = 1.0 - idle / total
        return self.busy


def load_average() -> str:
    """``uptime``'s load averages, with the CPU count, for the record of a run."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"
