"""A private, real IMAP server for tests: Debian's dovecot, started as a subprocess.

It listens on a free loopback port without TLS, authenticates users from a ``passwd-file``
(one file per user, so users can be added while it runs: a changed file within the same
second would not be re-read) and keeps
each user's mail in a Maildir under a temporary directory. Messages are seeded either with
``doveadm save`` (``save``) or over IMAP ``APPEND`` (``append``, fast for hundreds);
``recreate_folder`` deletes and creates a folder, which gives it a new UIDVALIDITY.

When running as root, dovecot refuses to run its login processes as root and mail as
uid 0, so those run as Debian's ``dovenull`` and ``dovecot`` users and the temporary
directory is made accessible to them; as any other user, everything runs as that user.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version() -> tuple[int, int]:
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=True)
    major, minor = out.stdout.split()[0].split(".")[:2]
    return int(major), int(minor)


class MailServer:
    """One dovecot instance; ``start()``/``stop()``, or use :func:`mail_server_fixture`."""

    def __init__(self) -> None:
        # not pytest's tmp_path: its parents are 0700, and dovecot's own users must get in
        self.root = Path(tempfile.mkdtemp(prefix="ecrm-dovecot-"))
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.config = self.root / "dovecot.conf"
        self.passwd = self.root / "users"
        self.log = self.root / "dovecot.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- life -------------------------------------------------------------------------------

    def _users(self) -> tuple[str, str, str, str]:
        """(internal user, login user, mail user, mail group) dovecot will run as."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            return me, me, me, group
        return "dovecot", "dovenull", "dovecot", "dovecot"

    def write_config(self) -> None:
        internal, login, mail_user, mail_group = self._users()
        major, minor = _version()
        cleartext = (
            "auth_allow_cleartext = yes"
            if (major, minor) >= (2, 4)
            else "disable_plaintext_auth = no"
        )
        mail = self.root / "mail"
        mail.mkdir(exist_ok=True)
        for path in (self.root, mail):
            path.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(mail, mail_user, mail_group)
        self.passwd.mkdir(exist_ok=True)
        self.passwd.chmod(0o755)
        self.config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log}
info_log_path = {self.log}
protocols = imap
mail_fsync = never
listen = {self.host}
ssl = no
{cleartext}
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {internal}
default_internal_group = {grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{mail}/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd}/%u
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={mail}/%u
}}
# no brute-force penalty: tests log in wrongly on purpose, then rightly at once
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
        )

    def start(self, timeout: float = 15) -> MailServer:
        self.write_config()
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: see restart
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot exited at start: {err}\n{self.logs()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}\n{self.logs()}")

    def restart(self, pause: float = 1.0) -> None:
        """Kill the server (SIGKILL: every session drops mid-command) and start it again on
        the same port with the same mail, as a crashed and restarted server would be.

        The whole process group: an ``imap`` process outlives its master and would go on
        serving the session it has, so killing the master alone drops nobody.
        """
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 15
        while self._listening() and time.monotonic() < deadline:  # its login processes
            time.sleep(0.05)  # die after it
        time.sleep(pause)
        self.start()

    def _listening(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), 0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill_connections(self, user: str) -> None:
        """Drop every IMAP session of ``user`` (as a server restart or a timeout would)."""
        subprocess.run(  # exit status 68 when nobody was connected: fine
            [DOVEADM, "-c", str(self.config), "kick", user], capture_output=True, timeout=30
        )

    # -- users and mail ---------------------------------------------------------------------

    def add_user(self, user: str, password: str) -> None:
        path = self.passwd / user
        path.write_text(f"{user}:{{PLAIN}}{password}\n")
        path.chmod(0o644)

    def _doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            [DOVEADM, "-c", str(self.config), *args],
            input=stdin,
            capture_output=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.decode()}")
        return done.stdout.decode()

    def save(self, user: str, message: bytes, folder: str = "INBOX") -> None:
        """Deliver one message with ``doveadm save`` (as local delivery would)."""
        self._doveadm("save", "-u", user, "-m", folder, stdin=message)

    def create_folder(self, user: str, folder: str) -> None:
        self._doveadm("mailbox", "create", "-u", user, folder)

    def recreate_folder(self, user: str, folder: str) -> None:
        """Delete and create ``folder`` (its messages go; it gets a new UIDVALIDITY)."""
        self._doveadm("mailbox", "delete", "-u", user, folder)
        self.create_folder(user, folder)

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        out = self._doveadm("mailbox", "status", "-u", user, "uidvalidity", folder)
        return int(out.strip().split("=")[1])

    @contextlib.contextmanager
    def imap(self, user: str, password: str) -> Iterator[IMAPClient]:
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(user, password)
        try:
            yield client
        finally:
            client.logout()

    def append(
        self, user: str, password: str, messages: list[bytes], folder: str = "INBOX"
    ) -> None:
        """Seed many messages over one IMAP connection (MULTIAPPEND, 100 per command)."""
        with self.imap(user, password) as client:
            for start in range(0, len(messages), 100):
                client.multiappend(folder, messages[start : start + 100])


def serve_mail() -> Iterator[MailServer]:
    """The body of a test module's fixture: a running dovecot, stopped afterwards.

    Use as ``@pytest.fixture(scope="module") def mail_server(): yield from serve_mail()``.
    """
    if not Path(DOVECOT).exists():
        pytest.fail("dovecot is not installed (apt-get install dovecot-imapd; .ci/run does it)")
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()
