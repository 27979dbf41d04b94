"""A batch's admission: several tickets in flight, each customer's in arrival order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing_recon_tasks.admission import admit


class Runs:
    """Ticket runs that end when the test says so; what was running when, recorded."""

    def __init__(self) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.running: set[int] = set()
        self.started: list[int] = []
        self.widest = 0
        self.settled = 0
        self.tasks: dict[int, asyncio.Task[Any]] = {}

    async def run(self, ticket_id: int) -> dict[str, Any]:
        gate = self.gates[ticket_id] = asyncio.Event()
        self.running.add(ticket_id)
        self.started.append(ticket_id)
        self.widest = max(self.widest, len(self.running))
        task = asyncio.current_task()
        assert task is not None
        self.tasks[ticket_id] = task
        await gate.wait()
        self.running.discard(ticket_id)
        if ticket_id == 99:
            raise RuntimeError("run 99 failed")
        return {"ticket_id": ticket_id}

    async def settle(self, _ticket_id: int, run: asyncio.Task[Any]) -> None:
        await asyncio.wait([run])

    async def counted(self) -> None:
        self.settled += 1

    async def finish(self, ticket_id: int) -> None:
        self.gates[ticket_id].set()
        await settle_loop()


async def settle_loop() -> None:
    for _ in range(20):  # let every ready task take its turn
        await asyncio.sleep(0)


def test_up_to_width_tickets_of_different_customers_run_at_once() -> None:
    async def scenario() -> tuple[Runs, list[Any]]:
        runs = Runs()
        batch = [(i, f"customer{i}@example.com") for i in range(1, 8)]
        admitted = asyncio.create_task(admit(batch, 3, runs.run, runs.settle, runs.counted))
        await settle_loop()
        assert runs.running == {1, 2, 3}  # the fourth waits for a free place
        await runs.finish(2)
        assert runs.running == {1, 3, 4}
        for ticket_id in (1, 3, 4, 5, 6, 7):
            await runs.finish(ticket_id)
        return runs, await admitted

    runs, results = asyncio.run(scenario())
    assert runs.widest == 3
    assert runs.started == [1, 2, 3, 4, 5, 6, 7]  # arrival order
    assert results == [{"ticket_id": i} for i in range(1, 8)]
    assert runs.settled == 7


def test_one_at_a_time_with_width_one() -> None:
    async def scenario() -> Runs:
        runs = Runs()
        batch = [(i, f"c{i}@example.com") for i in range(1, 5)]
        admitted = asyncio.create_task(admit(batch, 1, runs.run, runs.settle))
        for ticket_id in range(1, 5):
            await settle_loop()
            assert runs.running == {ticket_id}
            await runs.finish(ticket_id)
        await admitted
        return runs

    assert asyncio.run(scenario()).widest == 1


def test_a_customers_tickets_wait_for_each_other_in_arrival_order() -> None:
    """The same mailbox (any case, a +tag) never has two tickets unsettled, and the later one
    starts only after the earlier settled; meanwhile a later customer waits its turn too
    (admission stays in arrival order)."""
    async def scenario() -> Runs:
        runs = Runs()
        batch = [(1, "ann@example.com"), (2, "bob@example.com"), (3, "ANN+billing@example.com"),
                 (4, "cy@example.com")]
        admitted = asyncio.create_task(admit(batch, 4, runs.run, runs.settle))
        await settle_loop()
        assert runs.running == {1, 2}  # 3 is Ann's again: it waits for 1; 4 comes after 3
        await runs.finish(2)
        assert runs.running == {1}
        await runs.finish(1)
        assert runs.running == {3, 4}
        await runs.finish(4)
        await runs.finish(3)
        await admitted
        return runs

    assert asyncio.run(scenario()).started == [1, 2, 3, 4]


def test_a_failed_run_is_its_result_and_the_others_go_on() -> None:
    async def scenario() -> list[Any]:
        runs = Runs()
        admitted = asyncio.create_task(admit([(99, "a@x.test"), (2, "b@x.test")], 2,
                                             runs.run, runs.settle))
        await settle_loop()
        await runs.finish(99)
        await runs.finish(2)
        return await admitted

    failed, done = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError)
    assert done == {"ticket_id": 2}


def test_a_failed_settle_check_stops_the_batch_and_cancels_its_runs() -> None:
    async def scenario() -> Runs:
        runs = Runs()

        async def broken(ticket_id: int, run: asyncio.Task[Any]) -> None:
            if ticket_id == 2:
                raise ConnectionError("database gone")
            await asyncio.wait([run])

        admitted = asyncio.create_task(admit([(1, "a@x.test"), (2, "b@x.test"),
                                              (3, "c@x.test")], 2, runs.run, broken))
        await settle_loop()
        with pytest.raises(ConnectionError, match="database gone"):
            await admitted
        await settle_loop()
        return runs

    runs = asyncio.run(scenario())
    assert runs.started == [1, 2]  # nothing admitted after the failure
    assert all(task.cancelled() for task in runs.tasks.values())  # nor left running


def test_width_must_be_positive() -> None:
    runs = Runs()
    with pytest.raises(ValueError, match="at least 1"):
        asyncio.run(admit([(1, "a@x.test")], 0, runs.run, runs.settle))
