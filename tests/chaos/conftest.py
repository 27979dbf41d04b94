"""Chaos suite fixtures: one Prefect server, a warm fork server, worlds, the summary.

`pytest` runs a bounded, seeded subset (the tests not marked `chaos`); `pytest -m chaos` runs
the full suite. Both print the summary line at the end; `BILLING_RECON_CHAOS_SEED` reseeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import Tally, Workers, World

SEED = int(os.environ.get("BILLING_RECON_CHAOS_SEED", "20261124"))
TOTAL = Tally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the chaos tests did and found."""
    if TOTAL.runs:
        terminalreporter.section("chaos summary")
        for name, count in sorted(TOTAL.scenarios.items()):
            terminalreporter.write_line(f"  {name}: {count}")
        terminalreporter.write_line(TOTAL.line())


@pytest.fixture(scope="session")
def workers() -> Iterator[Workers]:
    """The fork server of worker processes (stopped at the end)."""
    pool = Workers()
    yield pool
    pool.stop()


@pytest.fixture
def new_world(tmp_path: Path, prefect_api: str) -> Iterator[Callable[..., World]]:
    """Makes worlds (each with its own databases and gateway process); all closed after."""
    made: list[World] = []

    def make(name: str = "w", billing_url: str | None = None,
             lifecycle: dict[str, str] | None = None) -> World:
        world = World(tmp_path / f"{name}{len(made)}", prefect_api, billing_url, lifecycle)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


@pytest.fixture
def tally() -> Iterator[Tally]:
    """This test's tally, added to the session's summary."""
    mine = Tally()
    yield mine
    TOTAL.add(mine)


def assert_clean(tally: Tally) -> None:
    """No duplicate, no lost ticket, no stuck ticket."""
    assert (tally.duplicates, tally.lost, tally.stuck) == (0, 0, 0), tally.line()
    assert tally.executed == tally.expected, tally.line()
