"""Tasks of the mailbox and the outbox: the core's ``steps.mailbox`` and ``steps.outbox``."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL

from billing_recon.steps import mailbox, outbox
from billing_recon_tasks.options import STEP
from billing_recon_tasks.runtime import deps, in_thread


def mail_on() -> bool:
    """Whether replies and notices are sent (an SMTP server is configured)."""
    return bool(deps().settings.smtp.host)


def ui_url() -> str | None:
    """The Prefect UI's base URL, when Prefect knows it (PREFECT_UI_URL)."""
    return PREFECT_UI_URL.value() or None


@task(name="open_tickets_from_mailbox", **STEP)
async def open_tickets_from_mailbox() -> list[int]:
    """A ticket for every new message of the IMAP folder (committed, then marked), in arrival
    order; messages read before whose mark a crash prevented give their existing ticket."""
    logger = get_run_logger()

    def progress(done: int, total: int) -> None:
        logger.info("mailbox: %s of %s messages taken", done, total)

    report = await in_thread(mailbox.take_mailbox, deps(), progress)
    logger.info("mailbox %s: %s new tickets (%s refused at intake), %s found again",
                report.folder, len(report.opened), len(report.rejected), len(report.known))
    return report.tickets


@task(name="send_mail", **STEP)
async def send_mail() -> dict[str, Any]:
    """Queue the replies and notices owed, and send what is queued, each once."""
    queued = await in_thread(outbox.queue_due, deps(), ui_url())
    done = await in_thread(outbox.deliver, deps())
    if done.error or done.uncertain or done.failed:
        get_run_logger().warning("mail: %s sent, deferred %s, failed %s, uncertain %s (%s)",
                                 len(done.sent), done.deferred, done.failed, done.uncertain,
                                 done.error)
    return {"queued": queued, "sent": done.sent, "deferred": done.deferred,
            "failed": done.failed, "uncertain": done.uncertain, "error": done.error}
