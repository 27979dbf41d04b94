"""A loopback stand-in for E2B that the official SDK talks to unchanged (127.0.0.1 only).

It speaks the three protocols the SDK uses when `api_url` and `sandbox_url` both point here,
told apart as E2B's proxy does by the `E2b-Sandbox-Port` header: the control plane
(`POST /v2/sandboxes`, `DELETE /sandboxes/{id}`), envd (`POST/GET /files`, `GET /health` ->
204) and the code interpreter on port 49999 as E2B's `template/server` answers (see FACTS.md):
`GET /health` -> 200 "OK"; `POST /execute` -> 200 with no Content-Type, streaming JSON lines
live as the kernel runs (e2b_kernel.py) and `{"type": "end_of_execution"}` last; an unknown
`context_id` -> 404 "Context ... not found". In E2B_DEBUG mode the SDK skips the control plane
and uses the sandbox id `debug_sandbox_id`; that works too.

Each sandbox has a home directory (the files the SDK writes, out/ included) and, from its first
execution on, a long-lived kernel process there. `fault` makes the next execution fail the way
E2B's server does when things break under it (see `Fault`).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from tests.integration.e2b_kernel import Kernel

DEBUG_ID = "debug_sandbox_id"
INTERPRETER_PORT = "49999"
END = b'{"type": "end_of_execution"}\n'
_PLAIN = "text/plain; charset=utf-8"

Fault = Literal["kernel_dies", "websocket_lost", "aborted", "dropped", "http_404", "http_500",
                "http_502"]
"""kernel_dies: the kernel is killed under the cell (ContextRestarting); websocket_lost: the
server loses the kernel's websocket (WebSocketError, then UnexpectedEndOfExecution); aborted:
the kernel aborts the request (ExecutionAborted); dropped: the connection closes mid-stream;
http_*: that status, with a plain-text body."""

_SERVER_ERRORS: dict[str, list[dict[str, Any]]] = {
    "websocket_lost": [
        {"type": "error", "name": "WebSocketError",
         "value": "The connections was lost, rerun the code to get the results", "traceback": ""},
        {"type": "error", "name": "UnexpectedEndOfExecution", "value": "Connection to the "
         "execution was closed before the execution was finished", "traceback": ""}],
    "aborted": [{"type": "error", "name": "ExecutionAborted", "value": "Execution was aborted",
                 "traceback": ""}],
}


@dataclass
class _Box:
    """One fake sandbox: its access token, home directory, default context and kernel."""

    token: str | None
    home: Path
    context_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kernel: Kernel | None = None


class FakeE2B:
    """The loopback server; records what the SDK asked for so tests can check it."""

    def __init__(self, api_key: str = "e2b_loopback_key", keepalive_s: float = 5.0) -> None:
        self.api_key, self.keepalive_s = api_key, keepalive_s
        self.created: list[dict[str, Any]] = []
        self.killed: list[str] = []
        self.executions = 0
        self.fault: Fault | None = None
        self._root = Path(tempfile.mkdtemp(prefix="fake-e2b-"))
        self._boxes: dict[str, _Box] = {DEBUG_ID: self._new_box(None)}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL for both `api_url` and `sandbox_url`."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeE2B:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving once running executions are over (none is left running behind us)."""
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0, timeout=30)
        self._server.shutdown()
        self._server.server_close()
        for box in self._boxes.values():
            if box.kernel is not None:
                box.kernel.kill()
        shutil.rmtree(self._root, ignore_errors=True)

    def live_sandboxes(self) -> list[str]:
        """Ids created and not killed."""
        with self._lock:
            return [box for box in self._boxes if box != DEBUG_ID]

    def _new_box(self, token: str | None) -> _Box:
        return _Box(token=token, home=Path(tempfile.mkdtemp(dir=self._root)))

    # --- control plane -----------------------------------------------------------------------

    def create(self, body: dict[str, Any], api_key: str | None) -> tuple[int, dict[str, Any]]:
        if api_key != self.api_key:
            return 401, {"code": 401, "message": "Invalid API key"}
        box_id, token = f"loop{secrets.token_hex(4)}", secrets.token_hex(8)
        with self._lock:
            self.created.append({"id": box_id, **body})
            self._boxes[box_id] = self._new_box(token)
        return 201, {"templateID": body.get("templateID", "base"), "sandboxID": box_id,
                     "clientID": "loopback", "envdVersion": "0.6.9", "envdAccessToken": token}

    def kill(self, box_id: str) -> int:
        with self._lock:
            self.killed.append(box_id)
            box = self._boxes.pop(box_id, None)
        if box is None:
            return 404
        if box.kernel is not None:
            box.kernel.kill()
        shutil.rmtree(box.home, ignore_errors=True)
        return 204

    # --- envd and code interpreter -----------------------------------------------------------

    def box(self, box_id: str | None, token: str | None) -> _Box | None:
        with self._lock:
            found = self._boxes.get(box_id or DEBUG_ID)
        return found if found is not None and found.token == token else None

    def take_fault(self) -> Fault | None:
        with self._lock:
            fault, self.fault = self.fault, None
            self.executions += 1
            self._running += 1
        return fault

    def executed(self) -> None:
        with self._idle:
            self._running -= 1
            self._idle.notify_all()

    def events(self, box: _Box, code: str, fault: Fault | None) -> Iterator[dict[str, Any]]:
        """The server's events for `code` in the box's kernel (started on first use)."""
        if fault in _SERVER_ERRORS:
            yield from _SERVER_ERRORS[fault]
            return
        if box.kernel is None:
            box.kernel = Kernel(box.home, self.keepalive_s)
        yield from box.kernel.execute(code, die=fault == "kernel_dies")


def _in_home(home: Path, path: str) -> Path | None:
    """`path` (relative to home, or absolute under /home/user) inside `home`, else None."""
    relative = path.removeprefix("/home/user/")
    target = (home / relative).resolve()
    inside = not relative.startswith("/") and target.is_relative_to(home.resolve())
    return target if inside else None


def _handler(fake: FakeE2B) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            url, body = urlparse(self.path), self._body()
            if url.path == "/v2/sandboxes":
                self._json(*fake.create(json.loads(body), self.headers.get("X-API-Key")))
            elif url.path == "/files":
                self._write_file(parse_qs(url.query)["path"][0], body)
            elif url.path == "/execute" and self._interpreter():
                self._execute(json.loads(body))
            else:
                self._json(404, {"message": f"no route {url.path}"})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/health" and self._interpreter():
                self._send(200, b'"OK"', "application/json")
            elif url.path == "/health":
                self._send(204, b"", None)  # envd
            elif url.path == "/files":
                self._read_file(parse_qs(url.query)["path"][0])
            else:
                self._json(404, {"message": f"no route {url.path}"})

        def do_DELETE(self) -> None:
            box_id = urlparse(self.path).path.rsplit("/", 1)[-1]
            if self.headers.get("X-API-Key") != fake.api_key:
                self._json(401, {"code": 401, "message": "Invalid API key"})
            else:
                self._send(fake.kill(box_id), b"", None)

        def _interpreter(self) -> bool:
            return self.headers.get("E2b-Sandbox-Port") == INTERPRETER_PORT

        def _box(self) -> _Box | None:
            box = fake.box(self.headers.get("E2b-Sandbox-Id"), self.headers.get("X-Access-Token"))
            if box is None:
                self._json(401, {"message": "unknown sandbox or bad access token"})
            return box

        def _write_file(self, path: str, data: bytes) -> None:
            if (box := self._box()) is None:
                return
            if (target := _in_home(box.home, path)) is None:
                self._json(400, {"message": f"path {path} is outside the home directory"})
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            self._json(200, [{"name": target.name, "type": "file", "path": path}])

        def _read_file(self, path: str) -> None:
            if (box := self._box()) is None:
                return
            target = _in_home(box.home, path)
            if target is None or not target.is_file():
                self._json(404, {"message": f"file {path} not found"})
                return
            self._send(200, target.read_bytes(), "application/octet-stream")

        def _execute(self, request: dict[str, Any]) -> None:
            if (box := self._box()) is None:
                return
            context = request.get("context_id")
            if context is not None and context != box.context_id:
                self._send(404, f"Context {context} not found".encode(), _PLAIN)
                return
            fault = fake.take_fault()
            try:
                self._stream(box, request["code"], fault)
            finally:
                fake.executed()

        def _stream(self, box: _Box, code: str, fault: Fault | None) -> None:
            if fault is not None and fault.startswith("http_"):
                status = int(fault.removeprefix("http_"))
                self._send(status, self.responses[status][0].encode(), _PLAIN)
                return
            self.send_response(200)  # no Content-Type: E2B's StreamingResponse sets none
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = fake.events(box, code, fault)
            try:
                for event in events:
                    self._chunk((json.dumps(event) + "\n").encode())
                    if fault == "dropped":
                        self.connection.shutdown(socket.SHUT_RDWR)  # no last chunk
                        self.close_connection = True
                        return
                self._chunk(END)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client stopped listening (its deadline, or an output flood)
                self.close_connection = True
            finally:
                events.close()  # a cell still running is interrupted, as the server does

        def _chunk(self, line: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str | None) -> None:
            self.send_response(status)
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
