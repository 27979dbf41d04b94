"""Admission of a batch's tickets: several in flight, each customer's in arrival order.

A batch opens its tickets one after another in arrival order (duplicate emails are found
then), and admits them in that order too. Up to ``width`` admitted tickets may be unsettled at
once (running, not yet finished nor waiting for a decision). A ticket also waits until the
previous ticket from the same mailbox has settled: a customer is found by the sender's address,
and what one ticket may propose is netted against what the customer's earlier tickets hold, so
the customer's tickets must reach their proposals in the order their emails arrived. Tickets of
other customers share no money and run side by side.

``width`` 1 is the batch of before: one ticket at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from billing_recon.domain.addresses import normalise_email

T = TypeVar("T")

#: Start a ticket's run; the task ends with the run.
Start = Callable[[int], "asyncio.Task[T]"]
#: Return once the ticket's run has finished or waits for a decision.
Settle = Callable[[int, "asyncio.Task[Any]"], Awaitable[None]]


async def admit(tickets: Sequence[tuple[int, str]], width: int, start: Start[T],
                settle: Settle, on_settled: Callable[[], Awaitable[None]] | None = None,
                ) -> list[T | BaseException]:
    """Run ``(ticket id, sender)`` pairs as described above; each run's result (or the
    exception it raised), in the given order, once all have ended."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    slots = asyncio.Semaphore(width)
    last: dict[str, asyncio.Event] = {}  # a mailbox -> its latest admitted ticket has settled
    runs: list[asyncio.Task[T]] = []
    watchers: set[asyncio.Task[None]] = set()
    failed: list[BaseException] = []

    async def watch(ticket_id: int, run: asyncio.Task[T], mailbox: str,
                    done: asyncio.Event) -> None:
        try:
            await settle(ticket_id, run)
        except Exception as exc:  # the batch stops with it, below
            failed.append(exc)
        finally:  # the slot and the customer's next ticket are never held by a failed check
            done.set()
            if last.get(mailbox) is done:
                del last[mailbox]
            slots.release()
        if on_settled is not None and not failed:
            await on_settled()

    try:
        for ticket_id, sender in tickets:
            await slots.acquire()
            mailbox = normalise_email(sender)
            before = last.get(mailbox)
            if before is not None:
                await before.wait()
            if failed:
                raise failed[0]
            done = last[mailbox] = asyncio.Event()
            run = start(ticket_id)
            runs.append(run)
            watcher = asyncio.create_task(watch(ticket_id, run, mailbox, done))
            watchers.add(watcher)
            watcher.add_done_callback(watchers.discard)
        await asyncio.gather(*watchers)
        if failed:
            raise failed[0]
    except BaseException:  # cancelled (Ctrl-C) or a failed check: stop what was started
        for task in [*runs, *watchers]:
            task.cancel()
        raise
    return list(await asyncio.gather(*runs, return_exceptions=True))
