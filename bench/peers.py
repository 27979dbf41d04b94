"""The same core steps orchestrated by what a user might pick instead of Prefect (issue 19).

Each peer runs exactly the steps of ``billing_recon.pipeline`` (open the ticket, triage,
retrieval, the sandboxed analysis with its capped self-correction and the trusted cross-check,
conclude up to APPROVAL_PENDING) with the same database, model and sandbox, one step per node or
step of the peer, each step's result persisted by the peer before the next one starts:

- **LangGraph** (``langgraph``): a ``StateGraph`` with one node per step and the routing of
  ``steps.machine.next_step`` on conditional edges, compiled with the SQLite checkpointer
  (``langgraph-checkpoint-sqlite``) or the PostgreSQL one (``langgraph-checkpoint-postgres``),
  invoked with ``durability="sync"`` (a checkpoint is written before the next step runs), one
  thread per email.
- **DBOS Transact** (``dbos``) on PostgreSQL: a ``@DBOS.workflow`` whose every step is a
  ``@DBOS.step`` (its output checkpointed in the system database), one workflow id per email;
  the batch enqueues every email on a queue running ``BENCH_PEER_CONCURRENCY`` (4) workflows at
  a time, polled every 0.1 s.

The packages are the optional ``bench`` extra (``pip install -e '.[bench]'``), never a runtime
dependency. Used by bench/ticket_runner.py (modes ``langgraph-sqlite``, ``langgraph-pg``,
``langgraph-batch``, ``dbos``, ``dbos-batch``) and so by bench/run.py (sections 1 and 2).
Where the peer keeps its state: ``BENCH_PEER_DB`` (a SQLite file for ``langgraph-sqlite``, a
PostgreSQL URL otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

from billing_recon import pipeline, runtime
from billing_recon.domain.fsm import State, is_terminal
from billing_recon.steps import intake
from billing_recon.steps.deps import Deps
from billing_recon.steps.machine import AUTOMATIC, next_step
from billing_recon.store import tickets

ACTOR = "peer"


class TicketState(TypedDict, total=False):
    """What a peer persists between steps: the email's path, the ticket and its state."""

    path: str
    ticket_id: int
    state: str


def _deps() -> Deps:
    return runtime.build()


def open_ticket(path: str) -> tuple[int, str]:
    """The intake step: the email becomes its ticket (or finds it)."""
    opened = intake.open_ticket(_deps(), Path(path).read_bytes(), path)
    return opened.ticket.id, opened.ticket.state


def run_step(ticket_id: int) -> str:
    """The ticket's next automatic step, taken as ``pipeline.advance`` takes it; the ticket's
    new state, or "held" when the global breaker holds it (a later run resumes it)."""
    deps = _deps()
    if not pipeline.take_step(deps, tickets.get(deps.sessions, ticket_id), ACTOR):
        return "held"
    return tickets.get(deps.sessions, ticket_id).state


def following(state: str) -> str | None:
    """The next automatic step's name after ``state``, or None when the ticket settled."""
    if state == "held" or is_terminal(State(state)):
        return None
    step = next_step(State(state))
    return step.value if step in AUTOMATIC else None


# ---------------------------------------------------------------- LangGraph


def _step_node(current: TicketState) -> TicketState:
    return {"state": run_step(current["ticket_id"])}


def _open_node(current: TicketState) -> TicketState:
    ticket_id, state = open_ticket(current["path"])
    return {"ticket_id": ticket_id, "state": state}


def _route(current: TicketState) -> str:
    from langgraph.graph import END

    step = following(current["state"])
    return END if step is None else step


def langgraph_app(checkpointer: Any) -> Any:
    """The compiled graph: open, then one node per automatic step, routed by the ticket's
    state after each."""
    from langgraph.graph import START, StateGraph

    graph = StateGraph(TicketState)
    graph.add_node("open", _open_node)
    for step in pipeline.STEPS:  # one node per step (the routing picks it by the state)
        graph.add_node(step.value, _step_node)
    targets = [s.value for s in pipeline.STEPS]
    graph.add_edge(START, "open")
    for source in ["open", *targets]:
        graph.add_conditional_edges(source, _route)
    return graph.compile(checkpointer=checkpointer)


def _saver(backend: str) -> Any:
    target = os.environ["BENCH_PEER_DB"]
    if backend == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        return SqliteSaver.from_conn_string(target)
    from langgraph.checkpoint.postgres import PostgresSaver

    return PostgresSaver.from_conn_string(target)


def _thread(path: Path) -> dict[str, Any]:
    return {"configurable": {"thread_id": path.name}, "recursion_limit": 50,
            "max_concurrency": int(os.environ.get("BENCH_PEER_CONCURRENCY", "4"))}


def langgraph_tickets(paths: list[Path], backend: str) -> None:
    """Each email through the graph, durably checkpointed (``durability="sync"``)."""
    with _saver(backend) as saver:
        saver.setup()
        app = langgraph_app(saver)
        for path in paths:
            app.invoke({"path": str(path)}, _thread(path), durability="sync")


def langgraph_batch(paths: list[Path]) -> None:
    """Every email at once through ``Pregel.batch`` on the PostgreSQL checkpointer,
    ``BENCH_PEER_CONCURRENCY`` (4) threads in flight."""
    with _saver("pg") as saver:
        saver.setup()
        app = langgraph_app(saver)
        app.batch([{"path": str(p)} for p in paths], [_thread(p) for p in paths],
                  durability="sync")


# ---------------------------------------------------------------- DBOS Transact


_dbos_ready: dict[str, Any] = {}


def _dbos() -> dict[str, Any]:
    """Register the workflow once and launch DBOS on ``BENCH_PEER_DB``."""
    if _dbos_ready:
        return _dbos_ready
    from dbos import DBOS

    DBOS(config={"name": "billing-recon-bench", "system_database_url": os.environ["BENCH_PEER_DB"],
                 "console_log_level": "WARNING", "log_level": "WARNING"})

    @DBOS.step()
    def dbos_open(path: str) -> tuple[int, str]:
        return open_ticket(path)

    @DBOS.step()
    def dbos_step(ticket_id: int, step: str) -> str:  # the step's name: in DBOS's record
        return run_step(ticket_id)

    @DBOS.workflow()
    def process_ticket_dbos(path: str) -> str:
        ticket_id, state = dbos_open(path)
        while (step := following(state)) is not None:
            state = dbos_step(ticket_id, step)
        return state

    DBOS.launch()
    # Polled every 0.1 s (the default is 1 s, which would cap a batch at a few tickets per
    # second whatever the work costs).
    queue = DBOS.register_queue(
        "tickets", worker_concurrency=int(os.environ.get("BENCH_PEER_CONCURRENCY", "4")),
        polling_interval_sec=0.1)
    _dbos_ready.update(DBOS=DBOS, workflow=process_ticket_dbos, queue=queue)
    return _dbos_ready


def dbos_tickets(paths: list[Path]) -> None:
    """Each email as its own durable workflow, one after another."""
    from dbos import SetWorkflowID

    ready = _dbos()
    for path in paths:
        with SetWorkflowID(f"ticket-{path.name}"):
            ready["workflow"](str(path))


def dbos_batch(paths: list[Path]) -> None:
    """Every email enqueued at once; the queue runs ``BENCH_PEER_CONCURRENCY`` at a time."""
    from dbos import SetWorkflowID

    ready = _dbos()
    handles = []
    for path in paths:
        with SetWorkflowID(f"ticket-{path.name}"):
            handles.append(ready["queue"].enqueue(ready["workflow"], str(path)))
    for handle in handles:
        handle.get_result()
