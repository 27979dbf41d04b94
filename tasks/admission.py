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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from billing_recon.domain.addresses import normalise_email

T = TypeVar("T")

#: A ticket's run, to its end.
Run = Callable[[int], Coroutine[Any, Any, T]]
#: Return once the ticket's run has finished or waits for a decision.
Settle = Callable[[int, "asyncio.Task[Any]"], Awaitable[None]]


async def admit(tickets: Sequence[tuple[int, str]], width: int, run_ticket: Run[T],
                settle: Settle, on_settled: Callable[[], Awaitable[None]] | None = None,
                ) -> list[T | BaseException]:
    """Run ``(ticket id, sender)`` pairs as described above; each run's result (or the
    exception it raised), in the given order, once all have ended. Only the runs in flight
    are held, so a long batch keeps one result per ticket and nothing else."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width}")
    slots = asyncio.Semaphore(width)
    last: dict[str, asyncio.Event] = {}  # a mailbox -> its latest admitted ticket has settled
    results: list[T | BaseException | None] = [None] * len(tickets)
    live: set[asyncio.Task[Any]] = set()  # runs and their watchers, until each is done
    failed: list[BaseException] = []

    def keep(task: asyncio.Task[Any]) -> None:
        live.add(task)
        task.add_done_callback(live.discard)

    def collect(index: int) -> Callable[[asyncio.Task[T]], None]:
        def done(run: asyncio.Task[T]) -> None:
            if not run.cancelled():
                results[index] = run.exception() or run.result()
        return done

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
        for index, (ticket_id, sender) in enumerate(tickets):
            await slots.acquire()
            mailbox = normalise_email(sender)
            before = last.get(mailbox)
            if before is not None:
                await before.wait()
            if failed:
                raise failed[0]
            done = last[mailbox] = asyncio.Event()
            run = asyncio.create_task(run_ticket(ticket_id))
            run.add_done_callback(collect(index))
            keep(run)
            keep(asyncio.create_task(watch(ticket_id, run, mailbox, done)))
        while live:
            await asyncio.wait(list(live))
        if failed:
            raise failed[0]
    except BaseException:  # cancelled (Ctrl-C) or a failed check: stop what was started
        for task in list(live):
            task.cancel()
        raise
    return cast(list[T | BaseException], results)
