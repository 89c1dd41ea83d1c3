"""Real servers on loopback for integration tests: Dovecot (IMAP) and aiosmtpd (SMTP).

Dovecot runs from a temporary config (see NOTES.md); without it the tests fail
under CI=true and are skipped elsewhere.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOVECOT_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{d}/mail/%u
mail_uid = {user}
mail_gid = {group}
first_valid_uid = 1
{unprivileged}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = home={d}/mail/%u
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (str(Path("/usr/sbin/dovecot")) if Path("/usr/sbin/dovecot").exists() else None)


@dataclass
class ImapAccount:
    host: str
    port: int
    user: str
    password: str


class Dovecot:
    """A throwaway Dovecot; `account()` adds a fresh user with an empty mailbox."""

    _counter = itertools.count(1)
    _deliveries = itertools.count(1)
    ACCOUNTS = 500

    def __init__(self, binary: str, *, tls: bool = False):
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.imaps_port = free_port() if tls else 0
        self.cert = self.dir / "cert.pem"
        ssl_lines = "ssl = no"
        if tls:
            key = self.dir / "key.pem"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(key), "-out", str(self.cert), "-days", "2", "-subj", "/CN=localhost",
                 "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60)
            key.chmod(0o644)
            ssl_lines = f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{key}"
        if os.geteuid() == 0:
            user, group, unprivileged = "nobody", "nogroup", ""
        else:
            user = pwd.getpwuid(os.getuid()).pw_name
            group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
            unprivileged = "\n".join(f"{k} = {v}" for k, v in (
                ("default_internal_user", user), ("default_internal_group", group), ("default_login_user", user)))
        (self.dir / "mail").mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir / "mail", "nobody", "nogroup")
        # Every account up front: Dovecot may not notice a users file changed within the same second.
        (self.dir / "users").write_text("".join(f"helpdesk{i}:{{PLAIN}}secret\n" for i in range(1, self.ACCOUNTS + 1)))
        self.config = self.dir / "dovecot.conf"
        self.config.write_text(DOVECOT_CONFIG.format(d=self.dir, port=self.port, user=user, group=group,
                                                     unprivileged=unprivileged, ssl=ssl_lines,
                                                     imaps_port=self.imaps_port))
        self.process = subprocess.Popen([binary, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.process.stderr.read().decode(errors='replace')}"
                                   f"{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def account(self) -> ImapAccount:
        number = next(self._counter)
        if number > self.ACCOUNTS:
            raise RuntimeError("out of test IMAP accounts; raise Dovecot.ACCOUNTS")
        return ImapAccount("127.0.0.1", self.port, f"helpdesk{number}", "secret")

    def deliver(self, account: ImapAccount, messages: list[bytes]) -> None:
        """Write messages straight into the account's INBOX Maildir, as a local delivery agent
        does: thousands per second, where IMAP APPEND manages hundreds.  Dovecot gives them
        UIDs when the folder is next selected."""
        root = self.dir / "mail" / account.user
        for sub in ("tmp", "new", "cur"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        stamp = int(time.time())
        for number, raw in enumerate(messages):
            name = f"{stamp}.M{number}P{os.getpid()}Q{next(self._deliveries)}.supportdesk-test"
            (root / "tmp" / name).write_bytes(raw)
            (root / "tmp" / name).rename(root / "new" / name)
        if os.geteuid() == 0:
            for path in [root, *root.rglob("*")]:
                shutil.chown(path, "nobody", "nogroup")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
