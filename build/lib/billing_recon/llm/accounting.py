"""Pure accounting of model calls: a call's identity (input hash) and its token upper bound."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from billing_recon.llm.port import ChatMessage

# Chat framing per message (role, separators) and the answer's priming, with room to spare.
MESSAGE_OVERHEAD_TOKENS = 8
CALL_OVERHEAD_TOKENS = 64


def input_hash(agent: str, messages: list[ChatMessage], schema: type[BaseModel]) -> str:
    """SHA-256 of what the model is asked: the same input on a re-run reuses the recorded answer.

    The model's name is left out on purpose: switching models must not pay twice for a step.
    """
    canonical = json.dumps({"agent": agent, "schema": schema.__name__,
                            "messages": [[m["role"], m["content"]] for m in messages]},
                           sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def prompt_bound(messages: list[ChatMessage], schema: type[BaseModel]) -> int:
    """An upper bound of the prompt tokens of a call, whatever the server's tokenizer.

    Byte-level BPE tokenizers (every OpenAI model) never make more tokens than UTF-8 bytes, and
    structured outputs add the JSON schema to the prompt.
    """
    text = sum(len(m["content"].encode()) + len(m["role"]) for m in messages)
    schema_bytes = len(json.dumps(schema.model_json_schema()).encode())
    return text + schema_bytes + MESSAGE_OVERHEAD_TOKENS * len(messages) + CALL_OVERHEAD_TOKENS
