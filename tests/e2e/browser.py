"""Headless Debian Chromium, driven by Playwright, answering a paused run's form in the Prefect UI.

Never `playwright install`: it downloads a browser build of its own, which fails offline. The
Debian `chromium` package (.ci/apt-packages.txt) is launched through ``executable_path``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = os.environ.get("BILLING_RECON_CHROMIUM", "/usr/bin/chromium")
# Headless, no sandbox (root in CI), and nothing that reaches for the network on its own.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
# The new UI fetches an analytics config from the internet; offline that only slows it down.
ANALYTICS = "**/*amplitude.com/**"
UI_TIMEOUT_MS = 20_000
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Answer:
    """What the approver enters in the form; ``code`` only where the form asks for one."""

    approve: bool
    approver: str
    note: str = ""
    code: str | None = None


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless, closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def artifact(name: str) -> Path:
    """A file kept after the run: in BILLING_RECON_TEST_ARTIFACTS, else <repo>/artifacts/."""
    folder = Path(os.environ.get("BILLING_RECON_TEST_ARTIFACTS") or REPO / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


@contextmanager
def module_browser() -> Iterator[BrowserContext]:
    """One headless Chromium and one context for a test module; skipped without Chromium.

    CI installs it (.ci/apt-packages.txt): there a missing browser fails instead of skipping.
    """
    if not Path(CHROMIUM).is_file():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with chromium() as browser, ui_context(browser) as context:
        yield context


@contextmanager
def ui_context(browser: Browser) -> Iterator[BrowserContext]:
    """A browser context (own cookies, storage and cache) tall enough for the whole dialog.

    Keep one per module: its cache spares every later page the UI's large scripts.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.route(ANALYTICS, lambda route: route.abort())
    try:
        yield context
    finally:
        context.close()


def ui_url(api_url: str) -> str:
    """The UI's address on the server whose API is ``api_url``."""
    return api_url.removesuffix("/").removesuffix("/api")


def open_resume_dialog(page: Page, api_url: str, run_id: str) -> Locator:
    """Open the run's page in the new UI, then "Open menu" -> "Resume"; return the dialog."""
    # No need to wait for every script and image: the clicks below wait for their targets.
    page.goto(f"{ui_url(api_url)}/v2/runs/flow-run/{run_id}", wait_until="domcontentloaded")
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name="Resume").click()
    dialog = page.get_by_role("dialog", name="Resume Flow Run")
    dialog.wait_for()
    return dialog


def field(dialog: Locator, label: str) -> Locator:
    """The input of a RunInput field, labelled ``Label`` or ``Label (Optional)``.

    Exact, because "Approve" is a prefix of "Approver".
    """
    return dialog.get_by_label(re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))


def fill_form(dialog: Locator, answer: Answer) -> None:
    """Fill the approval form; "Code" only when the form has it and a code is given."""
    _set_switch(field(dialog, "Approve"), answer.approve)
    field(dialog, "Approver").fill(answer.approver)
    field(dialog, "Note").fill(answer.note)
    code = field(dialog, "Code")
    if answer.code is not None and code.count():
        code.fill(answer.code)


def _set_switch(switch: Locator, on: bool) -> None:
    # The UI sends an untouched switch as missing and the server refuses the form: always
    # click it, twice when it already shows the wanted position.
    if (switch.get_attribute("aria-checked") == "true") == on:
        switch.click()
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true" if on else "false")


#: How long the UI may take to accept a form: the server validates the input against the
#: run's schema and moves the run on, which under a full test suite's load (two workers,
#: servers, this browser) once took longer than playwright's default 20 s.
ACCEPT_TIMEOUT_MS = 60_000


def submit(dialog: Locator) -> None:
    """Press the dialog's "Resume" button and wait until the UI has accepted the input; if it
    does not, fail with what the dialog shows (a refused form says why there)."""
    dialog.get_by_role("button", name="Resume", exact=True).click()
    try:
        dialog.wait_for(state="hidden", timeout=ACCEPT_TIMEOUT_MS)
    except PlaywrightTimeoutError as exc:
        raise AssertionError(f"the Resume dialog stayed open: {dialog.inner_text()!r}") from exc
