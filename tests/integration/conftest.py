"""The integration tests' background programs (see :mod:`tests.background`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.background import Programs

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the tests that take a background program's result after the other integration
    tests (keeping their order), so the programs run beside those tests, not while they wait."""

    def late(item: pytest.Item) -> bool:
        module = getattr(item, "module", None)
        return item.path.is_relative_to(HERE) and hasattr(module, "background_programs")

    spots = [i for i, item in enumerate(items) if item.path.is_relative_to(HERE)]
    if spots:
        block = items[spots[0] : spots[-1] + 1]
        items[spots[0] : spots[-1] + 1] = [i for i in block if not late(i)] + [
            i for i in block if late(i)
        ]


@pytest.fixture(scope="package", autouse=True)
def programs(request: pytest.FixtureRequest) -> Iterator[Programs]:
    """The programs of every selected test whose module declares ``background_programs``.

    They start here, when the first integration test starts, and run beside the tests; a
    test takes its program's result with ``programs.result(key)``. A module's
    ``background_programs(url, items)`` gets the broker's URL and its tests that will run
    (not those skipped, as ``rabbitmq_only`` ones are on the memory broker).
    """
    found = Programs()
    by_module: dict[Any, list[pytest.Item]] = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        declare = getattr(module, "background_programs", None)
        if declare is not None and item.get_closest_marker("skip") is None:
            by_module.setdefault(module, []).append(item)
    if by_module:
        url = request.getfixturevalue("amqp_url")
        for module, items in by_module.items():
            for key, program in module.background_programs(url, items).items():
                found.add(key, program)
        found.pump()
    yield found
    found.close()


@pytest.fixture(autouse=True)
def _start_waiting_programs(programs: Programs) -> None:
    """Between every two tests, start the programs that wait for a free slot."""
    programs.pump()
