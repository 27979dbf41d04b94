"""Issue 14: `process` takes bad mail in its stride: each is a recorded rejection, named with
its problem, and the good emails of the same call get their tickets (exit 0)."""

from __future__ import annotations

import json
import shutil

import pytest

from billing_recon.store.sample_data import SampleSet
from tests.bad_mail import CORPUS
from tests.e2e.conftest import Cli

pytestmark = pytest.mark.e2e


def test_bad_mail_in_a_process_call_is_refused_and_the_good_email_gets_its_ticket(
        cli: Cli, sample: SampleSet) -> None:
    """Before, the garbage raised UnicodeEncodeError (a traceback, exit 1) and the unknown
    charset stopped the call with exit 2 before any email was processed."""
    bad = []
    for name in ("binary-garbage.eml", "unknown-charset.eml", "nul-bytes.eml"):
        bad.append(str(cli.cwd / name))
        shutil.copy(CORPUS / name, bad[-1])
    good = str(sorted(sample.inbox_dir.glob("*.eml"))[0])
    done = cli.run("process", *bad, good, "--json", "--wait", "0")
    assert done.returncode == 0, done.stderr
    lines = {line["email"]: line for line in map(json.loads, done.stdout.splitlines())}
    assert {path: (lines[path]["state"], lines[path]["reason"]) for path in bad} == {
        bad[0]: ("REJECTED", "unreadable_email"), bad[1]: ("REJECTED", "unreadable_email"),
        bad[2]: ("CLOSED", "not_billing")}  # NUL bytes: read (and about lunch)
    assert lines[bad[0]]["problem"] == "no header fields: not an RFC 5322 message"
    assert lines[bad[1]]["problem"] == "the body's charset 'x-nonsense' is unknown"
    assert lines[good]["state"] == "APPROVAL_PENDING"
