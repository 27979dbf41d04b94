"""A real IMAP server for the tests: Debian's dovecot with a throw-away configuration.

Everything lives in a temporary folder (config, base_dir, state, logs, Maildir); it listens on
127.0.0.1 only (a STARTTLS port and an implicit-TLS port) with the tests' self-signed
certificate, one passwd-file user, and is stopped by its pid. It never reads /etc/dovecot or
/var/run/dovecot.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.mail.certs import Certs
from tests.mail.process import stop as stop_process

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER, PASSWORD = "billing", "app-token-1"
#: The system user mail is stored as (dovecot refuses uid 0 for mail; not root: ourselves).
MAIL_USER = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def free_port() -> int:
    """A port nobody listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, certs: Certs, starttls_port: int, tls_port: int) -> str:
    user = pwd.getpwnam(MAIL_USER)
    internal = "dovecot" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    login = "dovenull" if os.geteuid() == 0 else internal
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{certs.cert}
ssl_key = <{certs.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = {min(user.pw_uid, os.geteuid()) or 1}
mail_location = maildir:{root}/mail/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user.pw_uid} gid={user.pw_gid} home={root}/mail/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {starttls_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


@dataclass
class Dovecot:
    """A running dovecot: its ports, its user, its Maildir and its pid."""

    root: Path
    starttls_port: int
    tls_port: int
    process: subprocess.Popen[bytes]
    user: str = USER
    password: str = PASSWORD

    @property
    def maildir(self) -> Path:
        """The user's Maildir (INBOX)."""
        return self.root / "mail" / self.user / "Maildir"

    def deliver(self, raw: bytes, name: str) -> Path:
        """Drop a message into INBOX as a mail server's delivery agent would (Maildir new/)."""
        new = self.maildir / "new"
        path = new / f"{time.time_ns()}.{name}.billing-test"
        tmp = self.maildir / "tmp" / path.name
        tmp.write_bytes(raw)
        _own(tmp)
        tmp.rename(path)
        return path

    def stop(self) -> None:
        """Stop it by its pid (and wait for it)."""
        stop_process(self.process)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """What dovecot logged."""
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(MAIL_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def _ready(port: int, process: subprocess.Popen[bytes], root: Path) -> None:
    for _ in range(200):
        if process.poll() is not None:
            log = (root / "dovecot.log")
            raise RuntimeError("dovecot exited: " + (log.read_text() if log.exists() else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("dovecot did not listen")


def start(certs: Certs) -> Dovecot:
    """Start dovecot in the foreground in a new folder of /tmp (its users, dovecot and
    nobody, must reach it: pytest's folders are private to root); the caller stops it
    (``stop``, which also removes the folder)."""
    root = Path(tempfile.mkdtemp(prefix="billing-dovecot-"))
    root.chmod(0o711)
    for sub in ("run", "state", f"mail/{USER}/Maildir/new", f"mail/{USER}/Maildir/cur",
                f"mail/{USER}/Maildir/tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for path in [root / "mail", *(root / "mail").rglob("*")]:
        _own(path)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    (root / "passwd").chmod(0o644)
    starttls_port, tls_port = free_port(), free_port()
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, certs, starttls_port, tls_port))
    process = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Dovecot(root, starttls_port, tls_port, process)
    try:
        _ready(tls_port, process, root)
        _ready(starttls_port, process, root)
    except BaseException:
        server.stop()
        raise
    return server
