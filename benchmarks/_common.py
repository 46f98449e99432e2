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
