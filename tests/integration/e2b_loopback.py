"""A loopback stand-in for E2B that the official SDK talks to unchanged (127.0.0.1 only).

It speaks the three protocols the SDK uses when `api_url` and `sandbox_url` both point here:
the control plane (`POST /v2/sandboxes`, `DELETE /sandboxes/{id}`), envd (`POST/GET /files`,
`GET /health`) and the code interpreter (`POST /execute`, answered with JSON lines typed
stdout / stderr / error / number_of_executions). In E2B_DEBUG mode the SDK skips the control
plane and uses the sandbox id `debug_sandbox_id`; that works too.

Code runs with the local rlimit-subprocess backend underneath: the sandbox's files are the
run's input files, and the files the code leaves in out/ become the sandbox's out/ files. Like
a fresh E2B sandbox the filesystem is flat (the user's home directory) plus out/.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from billing_recon.sandbox.port import SandboxLimits, SandboxResult
from billing_recon.sandbox.subprocess_sandbox import SubprocessSandbox

DEBUG_ID = "debug_sandbox_id"


@dataclass
class _Box:
    """One fake sandbox: its access token and its files (path relative to home -> bytes)."""

    token: str | None
    files: dict[str, bytes] = field(default_factory=dict)


class FakeE2B:
    """The loopback server; records what the SDK asked for so tests can check it."""

    def __init__(self, api_key: str = "e2b_loopback_key", wall_timeout_s: float = 10.0) -> None:
        self.api_key = api_key
        self.created: list[dict[str, Any]] = []
        self.killed: list[str] = []
        self.executions = 0
        self._boxes: dict[str, _Box] = {DEBUG_ID: _Box(token=None)}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        self._local = SubprocessSandbox(limits=SandboxLimits(wall_timeout_s=wall_timeout_s))
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

    def live_sandboxes(self) -> list[str]:
        """Ids created and not killed."""
        with self._lock:
            return [box for box in self._boxes if box != DEBUG_ID]

    # --- control plane -----------------------------------------------------------------------

    def create(self, body: dict[str, Any], api_key: str | None) -> tuple[int, dict[str, Any]]:
        if api_key != self.api_key:
            return 401, {"code": 401, "message": "Invalid API key"}
        box_id, token = f"loop{secrets.token_hex(4)}", secrets.token_hex(8)
        with self._lock:
            self.created.append({"id": box_id, **body})
            self._boxes[box_id] = _Box(token=token)
        return 201, {"templateID": body.get("templateID", "base"), "sandboxID": box_id,
                     "clientID": "loopback", "envdVersion": "0.6.9", "envdAccessToken": token}

    def kill(self, box_id: str) -> int:
        with self._lock:
            self.killed.append(box_id)
            return 204 if self._boxes.pop(box_id, None) is not None else 404

    # --- envd and code interpreter -----------------------------------------------------------

    def box(self, box_id: str | None, token: str | None) -> _Box | None:
        with self._lock:
            found = self._boxes.get(box_id or DEBUG_ID)
        return found if found is not None and found.token == token else None

    def execute(self, box: _Box, code: str) -> Iterator[dict[str, Any]]:
        """Run `code` over the box's files; yield the interpreter's JSON events."""
        with self._lock:
            self._running += 1
            self.executions += 1
        try:
            flat = {name: data for name, data in box.files.items() if "/" not in name}
            result = self._local.run(code, flat)
            box.files.update({f"out/{rel}": data for rel, data in result.files.items()})
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()
        yield from _events(result)


def _events(result: SandboxResult) -> Iterator[dict[str, Any]]:
    now = time.time_ns()
    for kind in ("stdout", "stderr"):
        for line in getattr(result, kind).splitlines(keepends=True):
            yield {"type": kind, "text": line, "timestamp": now}
    if result.error is not None:
        yield {"type": "error", **result.error.model_dump()}
    yield {"type": "number_of_executions", "execution_count": 1}


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
            elif url.path == "/execute":
                self._execute(json.loads(body)["code"])
            else:
                self._json(404, {"message": f"no route {url.path}"})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/health":
                self._empty(204)
            elif url.path == "/files":
                self._read_file(parse_qs(url.query)["path"][0])
            else:
                self._json(404, {"message": f"no route {url.path}"})

        def do_DELETE(self) -> None:
            box_id = urlparse(self.path).path.rsplit("/", 1)[-1]
            if self.headers.get("X-API-Key") != fake.api_key:
                self._json(401, {"code": 401, "message": "Invalid API key"})
            else:
                self._empty(fake.kill(box_id))

        def _box(self) -> _Box | None:
            box = fake.box(self.headers.get("E2b-Sandbox-Id"), self.headers.get("X-Access-Token"))
            if box is None:
                self._json(401, {"message": "unknown sandbox or bad access token"})
            return box

        def _write_file(self, path: str, data: bytes) -> None:
            if (box := self._box()) is not None:
                box.files[path] = data
                self._json(200, [{"name": path.rsplit("/", 1)[-1], "type": "file", "path": path}])

        def _read_file(self, path: str) -> None:
            if (box := self._box()) is None:
                return
            if path not in box.files:
                self._json(404, {"message": f"file {path} not found"})
                return
            self._send(200, box.files[path], "application/octet-stream")

        def _execute(self, code: str) -> None:
            if (box := self._box()) is None:
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for event in fake.execute(box, code):
                    line = (json.dumps(event) + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped listening (its timeout, or an output flood)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
