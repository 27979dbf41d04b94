"""The one ticket-id type: ``T-000042`` to people, the integer 42 to the code.

``TicketId`` is what every flow takes as its ``ticket_id`` parameter: it accepts ``42``,
``"42"``, ``"T-000042"`` or ``"t-42"`` (a Prefect form, an automation's ``{{ event.resource.name
}}``, a caller's integer) and validates to the integer.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from billing_recon.errors import UserInputError

PATTERN = r"^[Tt]-?\d+$|^\d+$"


def format_ticket_id(ticket_id: int) -> str:
    """The public form of a ticket id: ``T-000042``."""
    return f"T-{ticket_id:06d}"


def parse_ticket_id(text: str) -> int:
    """Accept ``T-000042``, ``t-42`` or ``42``."""
    raw = text.strip().upper().removeprefix("T").removeprefix("-")
    if not raw.isdigit() or int(raw) < 1:
        raise UserInputError(f"not a ticket id: {text!r} (expected T-000042)")
    return int(raw)


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_ticket_id(value)
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
    return value


TicketId = Annotated[
    int, BeforeValidator(_coerce), Field(ge=1),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": PATTERN},
                              {"type": "integer", "minimum": 1}],
                    "title": "Ticket", "description": "The ticket, e.g. T-000042"}),
]
