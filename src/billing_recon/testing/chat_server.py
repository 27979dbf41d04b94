"""A loopback server that speaks OpenAI's chat-completions API, for tests, benchmarks and demos.

It serves the subset the OpenAI adapter uses: ``POST /v1/chat/completions`` with a
``json_schema`` response format, answered with a JSON message and token ``usage``. Answers are
scripted per agent (told apart by the response format's schema name) or, in the default
"rules" mode, built from the offline model's logic, so the real SDK sends real HTTP and parses
real JSON. Usage counts 4 characters a token (prompt: messages and schema) and a completion
longer than ``max_completion_tokens`` is cut off with ``finish_reason: "length"``, as OpenAI
does.

    python -m billing_recon.testing.chat_server [--port 8765]   # rules mode until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

from pydantic import BaseModel

from billing_recon.llm.offline import OfflineModel, estimate_tokens
from billing_recon.llm.port import ChatMessage

AGENT_OF_SCHEMA = {"TriageOutput": "triage", "AnalysisOutput": "analysis",
                   "SummaryOutput": "summary"}
CHARS_PER_TOKEN = 4


class _Rules:
    """Answer with the offline model's logic."""

    def __repr__(self) -> str:
        return "RULES"


RULES = _Rules()


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error (OpenAI's error body)."""

    code: int
    message: str = "scripted error"


@dataclass(frozen=True)
class Refusal:
    """Refuse to answer, as OpenAI's safety system does (``message.refusal``, no content)."""

    text: str = "I'm sorry, I cannot help with that."


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before answering ``then`` (a client with a shorter timeout gives up)."""

    seconds: float
    then: Answer = RULES


@dataclass(frozen=True)
class ChatRequest:
    """One request as the server saw it."""

    agent: str
    model: str
    messages: list[ChatMessage]
    max_completion_tokens: int | None
    body: dict[str, Any]


# dict/BaseModel: JSON content; str: raw content (may be broken JSON); a callable decides.
Answer = Union[dict[str, Any], BaseModel, str, Status, Stall, Refusal, _Rules,  # noqa: UP007
               Callable[[ChatRequest], "Answer"]]


@dataclass
class _Script:
    answers: list[Answer] = field(default_factory=list)

    def next(self) -> Answer:
        """The next scripted answer; the last one repeats; RULES when nothing is scripted."""
        if not self.answers:
            return RULES
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class ChatServer:
    """The loopback chat-completions server; ``url`` is the ``base_url`` for the SDK."""

    def __init__(self, *, port: int = 0, api_key: str | None = None, usage: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.api_key, self.send_usage = api_key, usage
        self.requests: list[ChatRequest] = []
        self._scripts: dict[str, _Script] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._offline = OfflineModel()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ChatServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name="chat-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (stalled answers give up at once)."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def script(self, agent: str, *answers: Answer) -> None:
        """Answer ``agent``'s next calls with ``answers`` in order; the last one repeats."""
        with self._lock:
            self._scripts[agent] = _Script(list(answers))

    def calls(self, agent: str | None = None) -> int:
        """How many requests arrived (for one agent, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if agent is None or r.agent == agent)

    def answer(self, request: ChatRequest, authorization: str | None = None
               ) -> tuple[int, dict[str, Any]]:
        """Status code and JSON body for a request (recorded first, even when refused)."""
        with self._lock:
            self.requests.append(request)
            if self.api_key and authorization != f"Bearer {self.api_key}":
                return 401, _error("invalid api key")
            answer = self._scripts.setdefault(request.agent, _Script()).next()
        return self._resolve(request, answer)

    def _resolve(self, request: ChatRequest, answer: Answer) -> tuple[int, dict[str, Any]]:
        while True:
            if isinstance(answer, Stall):
                if self._stopping.wait(answer.seconds):
                    return 503, _error("server stopping")
                answer = answer.then
            elif isinstance(answer, Status):
                return answer.code, _error(answer.message)
            elif isinstance(answer, Refusal):
                return 200, self._completion(request, answer.text, refusal=True)
            elif isinstance(answer, _Rules):
                answer = self._offline.answer(request.agent, request.messages)
            elif callable(answer) and not isinstance(answer, BaseModel):
                answer = answer(request)
            else:
                return 200, self._completion(request, _content(answer))

    def _completion(self, request: ChatRequest, content: str, refusal: bool = False
                    ) -> dict[str, Any]:
        schema = json.dumps(request.body.get("response_format", {}))
        prompt = sum(estimate_tokens(m["content"]) for m in request.messages)
        prompt += estimate_tokens(schema)
        completion, finish = estimate_tokens(content), "stop"
        cap = request.max_completion_tokens
        if cap is not None and completion > cap:
            content, completion, finish = content[:cap * CHARS_PER_TOKEN], cap, "length"
        body: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": request.model,
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant",
                                     "content": None if refusal else content,
                                     "refusal": content if refusal else None}}]}
        if self.send_usage:
            body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
        return body


def _content(answer: Answer) -> str:
    if isinstance(answer, BaseModel):
        return answer.model_dump_json()
    if isinstance(answer, dict):
        return json.dumps(answer)
    return str(answer)


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "scripted", "param": None, "code": None}}


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """A chat-completions request body as a ChatRequest (agent from the schema's name)."""
    schema_name = (body.get("response_format") or {}).get("json_schema", {}).get("name", "")
    messages: list[ChatMessage] = [{"role": str(m.get("role", "")),
                                    "content": str(m.get("content", ""))}
                                   for m in body.get("messages", [])]
    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(agent=AGENT_OF_SCHEMA.get(schema_name, schema_name),
                       model=str(body.get("model", "")), messages=messages,
                       max_completion_tokens=int(cap) if cap is not None else None, body=body)


def _handler_for(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, _error(f"no route {self.path}"))
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = parse_request(json.loads(self.rfile.read(length)))
            except (ValueError, AttributeError) as exc:
                return self._send(400, _error(f"bad request: {exc}"))
            self._send(*server.answer(request, self.headers.get("Authorization")))

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and went away: nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests and the benchmark read the recorded requests instead

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve rules-mode answers on loopback until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = ChatServer(port=args.port).start()
    print(f"OPENAI_BASE_URL={server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
