"""draft_reply: the summary agent writes the customer reply from the ticket's trusted facts."""

from __future__ import annotations

from billing_recon.agents.summary import ReplyFacts, draft_reply
from billing_recon.domain.fsm import Reason, State
from billing_recon.domain.money import fmt
from billing_recon.domain.proposal import Proposal
from billing_recon.errors import BudgetExceeded, GlobalBreakerOpen, ModelError
from billing_recon.llm.offline import OfflineModel
from billing_recon.steps.budget import metered
from billing_recon.steps.deps import Deps
from billing_recon.store import tickets
from billing_recon.store.models import Ticket


def _facts(ticket: Ticket, outcome: str) -> ReplyFacts:
    facts = ReplyFacts(ticket_id=tickets.format_ticket_id(ticket.id), outcome=outcome)
    if ticket.proposal and outcome == "refunded":
        proposal = Proposal.model_validate(ticket.proposal)
        first = proposal.refunds[0]
        facts = ReplyFacts(ticket_id=facts.ticket_id, outcome=outcome, currency=first.currency,
                           amount=fmt(first.amount),
                           invoices={k: fmt(v) for k, v in first.invoices.items()})
    return facts


def reply_for(deps: Deps, ticket: Ticket, outcome: str, actor: str = "summary-agent") -> str:
    """Draft the reply for an outcome; amounts come from the proposal, never the email.

    The reply never holds a ticket up: when the model is refused (budget, global breaker),
    unreachable or unusable, the offline template writes it and the log says why.
    """
    facts = _facts(ticket, outcome)
    try:
        return draft_reply(metered(deps, ticket.id, actor), facts)
    except (BudgetExceeded, GlobalBreakerOpen, ModelError) as exc:
        tickets.note(deps.sessions, ticket.id, "reply_fallback", actor,
                     {"error": str(exc), "kind": type(exc).__name__})
        return draft_reply(OfflineModel(), facts)


def close_refunded(deps: Deps, ticket_id: int, actor: str) -> Ticket:
    """REFUNDED -> CLOSED(refunded) with the drafted reply."""
    ticket = tickets.get(deps.sessions, ticket_id)
    reply = reply_for(deps, ticket, "refunded", actor)
    return tickets.transition(deps.sessions, ticket_id, State.CLOSED, reason=Reason.REFUNDED,
                              actor=actor, payload={"reply": reply}, fields={"reply": reply},
                              expect=State.REFUNDED)
