"""The ChatModel port every agent talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypedDict, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


class ChatMessage(TypedDict):
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class Usage:
    """Token usage of one call as reported by the model server.

    ``reported`` is False when the server sent no usage; the meter then charges the call's
    upper bound instead, so a silent server cannot slip past the budget.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = True

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Reply(Generic[T]):
    """A structured model answer with its usage."""

    output: T
    usage: Usage
    model: str


class ChatModel(Protocol):
    """Anything that turns messages into a validated pydantic object."""

    name: str

    def complete(self, agent: str, messages: list[ChatMessage], schema: type[T]) -> Reply[T]:
        """Answer ``messages`` for ``agent`` with an instance of ``schema``."""
        ...
