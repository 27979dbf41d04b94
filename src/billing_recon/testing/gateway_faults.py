"""Fault injection for the local gateway (a test double, never shipped): what networks and
crashes do to money.

Only `POST /v1/refunds` is disturbed, the one call that moves money:

| fault     | what the client sees                                  | was the refund made? |
|-----------|-------------------------------------------------------|----------------------|
| `error`   | a 500 `api_error`                                     | no                   |
| `reset`   | the connection reset (RST) before any answer          | no                   |
| `drop`    | the connection closed without an answer               | yes                  |
| `timeout` | no answer for `hold` seconds, then a closed connection | yes                  |
| `crash`   | the gateway process SIGKILLed between commit and reply | yes                  |

`latency` delays every refund request before it is handled. A plan is a spec string such as
`latency=0.05,drop=0.2,reset=0.1,seed=7` (rates per request) or `script=ok+drop+timeout`
(the faults of the next requests, in order; then the rates apply). Faults are off unless the
gateway is started with a plan (`--faults`, `BILLING_RECON_GATEWAY_FAULTS`); only then does
`/v1/test_helpers/faults` exist to change the plan (POST `spec=`) or read what was injected.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from starlette.types import Message, Receive, Scope, Send

FAULT_KINDS = ("error", "reset", "drop", "timeout", "crash")
_DISCONNECT_WAIT_S = 5.0


@dataclass
class FaultPlan:
    """Which faults the next refund requests get; counts what it injected."""

    latency_s: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    hold_s: float = 5.0
    script: list[str] = field(default_factory=list)
    seed: int | None = None
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        """Check the names; seed the random source."""
        for kind in [*self.rates, *self.script]:
            if kind not in (*FAULT_KINDS, "ok"):
                raise ValueError(f"unknown gateway fault {kind!r}; known: {FAULT_KINDS}")
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """A plan from `name=value,...` (see the module docstring); '' is a plan with no faults."""
        plan: dict[str, Any] = {"rates": {}}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            if name == "latency":
                plan["latency_s"] = float(value)
            elif name == "hold":
                plan["hold_s"] = float(value)
            elif name == "seed":
                plan["seed"] = int(value)
            elif name == "script":
                plan["script"] = [step for step in value.split("+") if step]
            else:
                plan["rates"][name] = float(value)
        return cls(**plan)

    def next_fault(self) -> str | None:
        """The fault for the next refund request, or None; counted."""
        with self._lock:
            fault = self.script.pop(0) if self.script else self._draw()
            if fault not in (None, "ok"):
                self.injected[fault] += 1
            return None if fault == "ok" else fault

    def _draw(self) -> str | None:
        roll = self._random.random()
        for kind, rate in self.rates.items():
            if roll < rate:
                return kind
            roll -= rate
        return None


class FaultInjector:
    """ASGI middleware, outermost around the gateway app: injects the plan's faults."""

    def __init__(self, app: FastAPI) -> None:
        """Wrap `app`, whose `state.faults` holds the current plan."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass everything through except refund creations, which may get a fault."""
        if scope["type"] != "http" or (scope["method"], scope["path"]) != ("POST", "/v1/refunds"):
            await self.app(scope, receive, send)
            return
        plan: FaultPlan = self.app.state.faults
        if plan.latency_s:
            await asyncio.sleep(plan.latency_s)
        fault = plan.next_fault()
        if fault is None:
            await self.app(scope, receive, send)
        elif fault == "error":
            await _send_500(send)
        elif fault == "reset":
            await _cut(send, receive, reset=True)
        else:
            await self._after_commit(fault, plan, scope, receive, send)

    async def _after_commit(self, fault: str, plan: FaultPlan, scope: Scope, receive: Receive,
                            send: Send) -> None:
        held: list[Message] = []

        async def keep(message: Message) -> None:
            held.append(message)  # the answer is made (and committed), never sent

        await self.app(scope, receive, keep)
        if fault == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "timeout":
            await asyncio.sleep(plan.hold_s)
        await _cut(send, receive, reset=False)


async def _send_500(send: Send) -> None:
    body = b'{"error": {"type": "api_error", "message": "Injected fault."}}'
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _cut(send: Send, receive: Receive, *, reset: bool) -> None:
    """Close the client's connection without an answer: RST (`reset`) or FIN.

    ASGI gives apps no socket; uvicorn's `send` is a method of the request cycle that owns the
    transport, which is the one place to reach it.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("gateway fault injection needs uvicorn's HTTP transport")
    if reset:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    # Wait for uvicorn to notice, so it does not try to answer on the dead connection.
    async with asyncio.timeout(_DISCONNECT_WAIT_S):
        while (await receive())["type"] != "http.disconnect":
            pass


faults_router = APIRouter(prefix="/v1/test_helpers/faults")


@faults_router.post("")
async def set_faults(request: Request) -> dict[str, Any]:
    """Replace the plan with the form field `spec` (counts start again)."""
    form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
    request.app.state.faults = FaultPlan.parse(form.get("spec", ""))
    return _describe(request.app.state.faults)


@faults_router.get("")
async def get_faults(request: Request) -> dict[str, Any]:
    """The plan and how many faults of each kind it injected."""
    return _describe(request.app.state.faults)


def _describe(plan: FaultPlan) -> dict[str, Any]:
    return {"latency_s": plan.latency_s, "rates": plan.rates, "hold_s": plan.hold_s,
            "script": plan.script, "injected": dict(plan.injected)}
