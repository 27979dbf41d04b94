"""The one configuration: a typed settings tree read from the environment and ``.env``.

This is the only module of the product that reads the environment. Every setting has one
variable (``config.variables`` derives its name from the models; docs/configuration.md lists
them all); the process environment wins over a ``.env`` file in the working directory, which
wins over the defaults. ``load()`` turns a bad value into one ``UserInputError`` naming the
variable. The Prefect blocks hold the same sections, so a block set is just another source.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from billing_recon.config.intake import IntakeSettings
from billing_recon.config.llm import LlmBudget, ModelSettings
from billing_recon.config.sandbox import SandboxSettings
from billing_recon.config.sections import (
    ApprovalSettings,
    DatabaseSettings,
    GatewaySettings,
    KeySettings,
    OrchestrationSettings,
    SwitchSettings,
)
from billing_recon.config.variables import Variable, variable_at, variables
from billing_recon.config.webhooks import WebhookSettings
from billing_recon.errors import UserInputError

DOTENV = Path(".env")
# Random per process: a fingerprint tells secrets apart in this process and is useless elsewhere
# (no offline guessing of a weak database password from a logged digest).
_FINGERPRINT_KEY = secrets.token_bytes(32)


def secret_fingerprint(*values: str | None) -> str:
    """A keyed digest of secret values: equal values give equal fingerprints in one process."""
    return hmac.new(_FINGERPRINT_KEY, json.dumps(values).encode(), "sha256").hexdigest()[:20]


def _default_home() -> Path:
    return Path.home() / ".billing-recon"


class VariablesSource(PydanticBaseSettingsSource):
    """Settings from a mapping of variables (the environment, or a ``.env`` file's lines).

    Each field is looked up under its own variable name (``config.variables``), so names stay
    flat (``BILLING_RECON_SANDBOX_WORKERS``) while the settings are a tree. An empty value
    counts as unset.
    """

    def __init__(self, settings_cls: type[BaseSettings], values: Mapping[str, str | None]):
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: values are gathered for the whole tree at once in ``__call__``."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for var in variables(self.settings_cls):
            raw = self._values.get(var.name)
            if raw is None or not raw.strip():
                continue
            node = found
            for key in var.path[:-1]:
                node = node.setdefault(key, {})
            node[var.path[-1]] = raw.strip()
        return found


class Settings(BaseSettings):
    """Everything billing-recon needs to know about its environment, one section per concern."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    home: Path = Field(default_factory=_default_home,
                       description="Folder of the generated key files (signing.key, "
                       "approvers.key, gateway.key, webhook.key).")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    llm: ModelSettings = Field(default_factory=ModelSettings)
    budgets: LlmBudget = Field(default_factory=LlmBudget)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings)
    intake: IntakeSettings = Field(default_factory=IntakeSettings)
    switches: SwitchSettings = Field(default_factory=SwitchSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Given values, then the process environment, then ``.env`` (then the defaults)."""
        dotenv = dotenv_values(DOTENV) if DOTENV.is_file() else {}
        return (init_settings, VariablesSource(settings_cls, os.environ),
                VariablesSource(settings_cls, dotenv))

    def fingerprint(self) -> str:
        """A keyed digest of every value, secrets included: equal settings, equal digest."""
        return secret_fingerprint(json.dumps(self.model_dump(mode="python"), sort_keys=True,
                                             default=_plain))

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value this process knows: each SecretStr of the tree, the password of
        each secret URL, and the signing and approver keys (for redaction)."""
        found: list[str] = [self.signing_key().decode(), self.approver_key().decode(),
                            self.local_gateway_key(), self.webhook_secret()]
        _secrets_of(self, found)
        return tuple(found)

    def signing_key(self) -> bytes:
        """The given key, else a random key in an owner-only file under ``home``."""
        return _key(self.keys.signing_key, self.home / "signing.key")

    def local_gateway_key(self) -> str:
        """The key the local gateway requires: the given one, else a random ``sk_local_`` key
        in an owner-only file ``gateway.key`` under ``home`` (created once)."""
        return _key(self.gateway.api_key, self.home / "gateway.key", prefix="sk_local_").decode()

    def webhook_secret(self) -> str:
        """The webhook endpoint's signing secret: the given one, else a random ``whsec_`` key
        in an owner-only file ``webhook.key`` under ``home`` (created once)."""
        return _key(self.webhooks.secret, self.home / "webhook.key", prefix="whsec_").decode()

    def refund_api_key(self) -> str:
        """The key refund calls send: the embedded gateway's own key when no gateway URL is
        set; else the Stripe key, else the local gateway's (one run alone with this home)."""
        given = self.gateway.stripe_api_key
        if self.gateway.url and given is not None:
            return given.get_secret_value()
        return self.local_gateway_key()

    def approver_key(self) -> bytes:
        """Key material sealing approvers' TOTP secrets: the given key, else a random key in
        an owner-only file ``approvers.key`` (created once).

        Losing or changing it makes every enrolled secret unreadable: approvers re-enroll.
        """
        return _key(self.keys.approver_key, self.home / "approvers.key")


def _secrets_of(model: BaseModel, found: list[str]) -> None:
    for _name, value in model:
        if isinstance(value, SecretStr):
            plain = value.get_secret_value()
            found.append(plain)
            with contextlib.suppress(ValueError):  # not a URL: the whole value is enough
                password = urlsplit(plain).password
                if password:
                    found.append(password)
        elif isinstance(value, BaseModel):
            _secrets_of(value, found)


def _plain(value: object) -> object:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return sorted(map(str, value)) if isinstance(value, (set, frozenset)) else str(value)


def load(**given: Any) -> Settings:
    """The settings of this process (``given`` sections win); a bad value is a
    ``UserInputError`` naming its variable."""
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise UserInputError(explain(exc)) from None


def from_variables(values: Mapping[str, str]) -> Settings:
    """The settings ``values`` alone give (no process environment, no ``.env``): for checks."""
    source = VariablesSource(Settings, values)
    try:
        return Settings.model_validate(source())
    except ValidationError as exc:
        raise UserInputError(explain(exc)) from None


def file_variables(path: Path) -> dict[str, str]:
    """The variables a ``.env``-style file sets (a bare name counts as empty: unset)."""
    return {name: value or "" for name, value in dotenv_values(path).items()}


def with_variables(values: Mapping[str, str]) -> Settings:
    """The settings of this process with ``values`` (variable -> value) winning over the
    environment, which wins over ``.env``: one configuration among several (evaluation)."""
    known = {var.name for var in variables(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError(f"unknown setting {', '.join(unknown)} (docs/configuration.md "
                             "lists every variable)")
    dotenv = dotenv_values(DOTENV) if DOTENV.is_file() else {}
    merged = {**{k: v for k, v in dotenv.items() if v is not None}, **os.environ, **values}
    return from_variables(merged)


def explain(exc: ValidationError) -> str:
    """Each problem of a validation error, named by its variable."""
    known = variables(Settings)
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        var = variable_at(known, loc)
        inside = ".".join(map(str, loc[len(var.path):])) if var else ""
        problems.append(_problem(var, error["msg"], error.get("input"), inside))
    return "bad setting: " + "; ".join(problems)


def _problem(var: Variable | None, message: str, value: object, inside: str) -> str:
    if var is None:
        return message
    if inside.isdigit():  # one item of a list
        return f"{var.name} item {value!r}: {message}"
    if inside:  # a part of a structured value (a price of the table, say)
        return f"{var.name} at {inside}: {message}"
    shown = "" if var.secret or not isinstance(value, (str, int, float)) else f"={value!r}"
    return f"{var.name}{shown}: {message}"


def _key(given: SecretStr | None, path: Path, prefix: str = "") -> bytes:
    """A key: the one given, else the key file at ``path``, created once with a random key
    (after ``prefix``) and mode 0600."""
    if given is not None and given.get_secret_value():
        return given.get_secret_value().encode()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first; use theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(prefix + secrets.token_hex(32))
    for _ in range(50):  # the creator may not have written it yet
        key = path.read_text().strip()
        if key:
            return key.encode()
        time.sleep(0.05)
    raise RuntimeError(f"key file {path} is empty")
