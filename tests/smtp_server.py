"""A real SMTP server in-process (aiosmtpd) for the outbound email tests.

``SmtpSink`` collects every message it accepts (parsed, with its envelope) and can be told
to refuse: ``refuse_rcpt = "550 5.1.1 no such user"`` or ``refuse_data = "451 4.3.0 try
later"`` answers each matching command that way until reset. ``make_ca`` writes a
throwaway CA and a server certificate for ``localhost``/``127.0.0.1`` with the ``openssl``
command line, so TLS is verified by the client against a CA it was told to trust.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None


@dataclass
class SmtpSink:
    """The handler: accepts (or refuses, as told) and keeps what it accepted."""

    received: list[Received] = field(default_factory=list)
    refuse_rcpt: str | None = None
    refuse_data: str | None = None
    data_attempts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_attempts += 1
        if self.refuse_data:
            return self.refuse_data
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        login = session.auth_data.login.decode() if session.auth_data else None
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), message, login)  # type: ignore[arg-type]
            )
        return "250 2.0.0 Ok: queued"

    def messages(self) -> list[Received]:
        with self._lock:
            return list(self.received)


def authenticator(users: dict[str, str]) -> Any:
    """An aiosmtpd authenticator accepting these user/password pairs (PLAIN and LOGIN)."""

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
            data.password.decode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(sink: SmtpSink, **smtp_parameters: Any) -> Controller:
    """Start aiosmtpd on a free loopback port (retried if another test takes it first)."""
    last: Exception | None = None
    for _ in range(5):
        controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **smtp_parameters)
        try:
            controller.start()
            return controller
        except Exception as exc:  # port taken meanwhile
            last = exc
    raise RuntimeError(f"aiosmtpd did not start: {last}")


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(folder: Path) -> Certificates:
    """A throwaway CA and a server certificate it signed (SAN localhost, 127.0.0.1)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        ca_key,
        "-out",
        ca_cert,
        "-subj",
        "/CN=ecrm test CA",
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        csr,
        "-subj",
        "/CN=localhost",
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca_cert,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        cert,
        "-extfile",
        ext,
    )
    return Certificates(ca_cert, cert, key)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
