"""The OpenAI adapter: the ChatModel port over the official SDK's chat completions.

Any OpenAI-compatible server works (``base_url``). Each agent's answer is a structured output:
the pydantic schema goes out as a strict ``json_schema`` response format and comes back parsed
by the SDK. Timeouts and the SDK's own retries are bounded by ``ModelSettings``; every SDK
exception is converted to one of ours at this boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam, ParsedChatCompletion
from openai.types.completion_usage import CompletionUsage
from pydantic import SecretStr, ValidationError

from billing_recon.config.llm import ModelSettings
from billing_recon.errors import ModelOutputInvalid, ModelUnavailable, UserInputError
from billing_recon.llm.port import ChatMessage, Reply, T, Usage

OPENAI_API_URL = "https://api.openai.com/v1"
# Self-hosted OpenAI-compatible servers (vLLM, Ollama, ...) often need no key; the SDK needs one.
KEYLESS = "not-needed"


@dataclass(frozen=True)
class OpenAIEndpoint:
    """Where the server is and the key to use (the model settings' ``base_url`` and ``api_key``)."""

    api_key: SecretStr | None = None
    base_url: str | None = None

    @classmethod
    def of(cls, settings: ModelSettings) -> OpenAIEndpoint:
        """The endpoint the model settings name."""
        return cls(api_key=settings.api_key, base_url=settings.base_url)

    def client(self, settings: ModelSettings) -> openai.OpenAI:
        """An SDK client with bounded timeout and retries."""
        if self.api_key is None and self.base_url is None:
            raise UserInputError("the OpenAI model needs OPENAI_API_KEY (or OPENAI_BASE_URL for "
                                 "an OpenAI-compatible server without keys)")
        key = self.api_key.get_secret_value() if self.api_key else KEYLESS
        # base_url is always explicit: the SDK would otherwise read OPENAI_BASE_URL itself.
        return openai.OpenAI(api_key=key, base_url=self.base_url or OPENAI_API_URL,
                             timeout=settings.timeout_s, max_retries=settings.max_retries)


def _sdk_messages(messages: list[ChatMessage]) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    for m in messages:
        if m["role"] == "system":
            out.append({"role": "system", "content": m["content"]})
        elif m["role"] == "assistant":
            out.append({"role": "assistant", "content": m["content"]})
        else:
            out.append({"role": "user", "content": m["content"]})
    return out


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:  # some compatible servers omit it; the meter charges the bound instead
        return Usage(0, 0, reported=False)
    return Usage(usage.prompt_tokens, usage.completion_tokens)


def _invalid(message: str, model: str, usage: CompletionUsage | None) -> ModelOutputInvalid:
    seen = _usage(usage)
    if not seen.reported:
        return ModelOutputInvalid(message, model=model)
    return ModelOutputInvalid(message, model=model, prompt_tokens=seen.prompt_tokens,
                              completion_tokens=seen.completion_tokens)


class OpenAIChatModel:
    """A ChatModel answered by an OpenAI-compatible chat-completions server."""

    name = "openai"

    def __init__(self, endpoint: OpenAIEndpoint, settings: ModelSettings) -> None:
        self.settings = settings
        self._client = endpoint.client(settings)

    def complete(self, agent: str, messages: list[ChatMessage], schema: type[T]) -> Reply[T]:
        """One structured-output call with the agent's model and output cap."""
        model = self.settings.model_for(agent)
        completion = self._call(agent, model, messages, schema)
        choice = completion.choices[0]
        if choice.message.refusal or choice.message.parsed is None:
            why = choice.message.refusal or "no structured answer"
            raise _invalid(f"{model} gave no {schema.__name__}: {why}", model, completion.usage)
        return Reply(output=choice.message.parsed, usage=_usage(completion.usage),
                     model=completion.model or model)

    def _call(self, agent: str, model: str, messages: list[ChatMessage], schema: type[T]
              ) -> ParsedChatCompletion[T]:
        cap = self.settings.output_cap(agent)
        extra: dict[str, Any] = {}
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        try:
            return self._client.chat.completions.parse(
                model=model, messages=_sdk_messages(messages), response_format=schema,
                max_completion_tokens=cap, **extra)
        except openai.LengthFinishReasonError as exc:
            raise _invalid(f"{model}'s answer was cut off at {cap} tokens", model,
                           exc.completion.usage) from exc
        except openai.ContentFilterFinishReasonError as exc:
            usage = exc.completion.usage if exc.completion else None
            raise _invalid(f"{model}'s answer was blocked by its content filter", model,
                           usage) from exc
        except ValidationError as exc:  # the server ignored the schema; its usage is not seen
            raise ModelOutputInvalid(f"{model}'s answer is not a valid {schema.__name__}: "
                                     f"{exc.errors(include_url=False)[:3]}", model=model) from exc
        except openai.APITimeoutError as exc:
            raise ModelUnavailable(f"{model} timed out after {self.settings.timeout_s:g}s "
                                   f"({self.settings.max_retries} retries)") from exc
        except openai.APIConnectionError as exc:
            raise ModelUnavailable(f"cannot reach the model server: {exc}") from exc
        except openai.APIStatusError as exc:
            raise ModelUnavailable(f"{model}: HTTP {exc.status_code}: {exc.message}",
                                   status=exc.status_code) from exc
