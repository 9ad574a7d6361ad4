"""The ``email`` channel: a multipart (plain text + HTML) mail sent through an SMTP relay with
aiosmtplib, threaded per incident, and the mapping of SMTP outcomes to deliveries.

SMTP says whether a failure is temporary: 4xx replies (greylisting, mailbox busy, ``451``)
are worth retrying, 5xx replies (unknown recipient, ``535`` bad credentials) are not.
Connection trouble and timeouts are retried; TLS verification failures are not.
"""

from __future__ import annotations

import re
import ssl
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

import aiosmtplib
from pydantic import SecretStr

from driftowner import render
from driftowner.channels import safe_detail, timeout_seconds
from driftowner.model import Delivery, Notification

MESSAGE_ID_DOMAIN = "driftowner"
# Python's header folder doubles the space before an encoded word it wraps onto a new line
# ("falling  — owner"), so headers are only folded past RFC 5322's hard limit of 998.
_WIRE_POLICY = SMTP.clone(max_line_length=998)
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _id_part(value: str) -> str:
    return _ID_UNSAFE.sub("-", value) or "-"


def thread_id(incident_id: str) -> str:
    """The message id every mail of one incident refers to: ``<incident-ID@driftowner>``."""
    return f"<incident-{_id_part(incident_id)}@{MESSAGE_ID_DOMAIN}>"


def message_id(notification_id: str) -> str:
    """The Message-ID of one notification's mail. Stable across retries, so a mail the relay
    accepted twice (at-least-once delivery) can be recognised as one."""
    return f"<notification-{_id_part(notification_id)}@{MESSAGE_ID_DOMAIN}>"


def build_email(notification: Notification, sender: str, now: datetime) -> EmailMessage:
    """The mail for one notification: subject, text and HTML parts, threading headers.

    Args:
        notification: What to send and to whom (``address`` is the To address).
        sender: The From address.
        now: The Date header's time.

    Raises:
        ValueError: when an address or header value cannot be put into a mail.
    """
    message = notification.message
    mail = EmailMessage()
    mail["Subject"] = render.subject(message)
    mail["From"] = sender
    mail["To"] = notification.address
    mail["Date"] = format_datetime(now.astimezone(UTC))
    mail["Message-ID"] = message_id(notification.id)
    mail["In-Reply-To"] = thread_id(message.incident_id)
    mail["References"] = thread_id(message.incident_id)
    # RFC 3834: tells vacation responders and ticket systems not to answer a robot.
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Driftowner-Incident"] = render.one_line(message.incident_id)
    mail["X-Driftowner-Purpose"] = message.purpose
    mail.set_content(render.text(message))
    mail.add_alternative(render.html(message), subtype="html")
    return mail


class EmailChannel:
    """Sends each notification as one mail through an SMTP relay, one connection per mail.

    Args:
        name: The channel's name in the config.
        host: The relay's host name or address.
        port: Its port (587 with STARTTLS, 465 with implicit TLS).
        starttls: Upgrade the connection with STARTTLS; a relay that does not offer it fails.
        use_tls: Speak TLS from the first byte (implicit TLS); excludes ``starttls``.
        username: The login for SMTP AUTH, if the relay needs one.
        password: Its password; a secret, never shown in details.
        sender: The From address.
        timeout: The timeout of each network operation.
        ca_file: An extra CA bundle to verify the relay's certificate against.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        starttls: bool,
        use_tls: bool,
        username: str | None,
        password: SecretStr | None,
        sender: str,
        timeout: timedelta,
        ca_file: Path | None = None,
    ) -> None:
        self.name = name
        self._host = host
        self._port = port
        self._starttls = starttls and not use_tls
        self._use_tls = use_tls
        self._username = username
        self._password = password
        self._sender = sender
        self._timeout = timeout
        self._ca_file = ca_file

    def _secrets(self) -> tuple[str | None, ...]:
        return (self._password.get_secret_value() if self._password else None,)

    async def send(self, notification: Notification) -> Delivery:
        """Send one notification's mail; every outcome comes back as a Delivery."""
        try:
            mail = build_email(notification, self._sender, datetime.now(UTC))
            sender = mail["From"].addresses[0].addr_spec
            recipients = [address.addr_spec for address in mail["To"].addresses]
            raw = mail.as_bytes(policy=_WIRE_POLICY)
        except (ValueError, TypeError, IndexError) as exc:
            return Delivery.give_up(
                safe_detail(f"email: cannot build the mail: {exc}", self._secrets())
            )
        if not recipients:
            return Delivery.give_up("email: the notification has no recipient address")
        try:
            _, reply = await aiosmtplib.send(
                raw,
                sender=sender,
                recipients=recipients,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password.get_secret_value() if self._password else None,
                use_tls=self._use_tls,
                start_tls=self._starttls,
                timeout=timeout_seconds(self._timeout),
                cert_bundle=str(self._ca_file) if self._ca_file else None,
            )
        except Exception as exc:  # every failure becomes a Delivery; see _judge
            return self._judge(exc)
        # The relay's last reply often names its queue id: the thread to follow in its logs.
        return Delivery.delivered(safe_detail(reply, self._secrets()))

    def _judge(self, exc: Exception) -> Delivery:
        detail = self._describe(exc)
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [refused.code for refused in exc.recipients]
            if any(400 <= code < 500 for code in codes):
                return Delivery.retry(detail)
            return Delivery.give_up(detail)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if 500 <= exc.code < 600:
                return Delivery.give_up(detail)
            return Delivery.retry(detail)
        if _tls_verification_failed(exc):
            return Delivery.give_up(detail)
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectError):
            return Delivery.retry(detail)
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return Delivery.retry(detail)
        if isinstance(exc, aiosmtplib.SMTPException | ValueError):
            # STARTTLS or AUTH not offered, bad options: configuration, not luck.
            return Delivery.give_up(detail)
        if isinstance(exc, OSError | TimeoutError):
            return Delivery.retry(detail)
        return Delivery.give_up(detail)

    def _describe(self, exc: Exception) -> str:
        where = f"{self._host}:{self._port}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            return safe_detail(f"email: {where} refused the recipient: {text}", self._secrets())
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            text = f"authentication failed: {exc.code} {exc.message}"
        elif isinstance(exc, aiosmtplib.SMTPResponseException):
            text = f"{exc.code} {exc.message}"
        else:
            cause = exc.__cause__
            text = f"{type(exc).__name__}: {exc}"
            if cause is not None and str(cause) not in text:
                text += f" ({type(cause).__name__}: {cause})"
        return safe_detail(f"email: {where}: {text}", self._secrets())

    async def aclose(self) -> None:
        """Nothing to release: each mail uses its own connection."""


def _tls_verification_failed(exc: BaseException) -> bool:
    """Whether ``exc`` or what caused it is a failed certificate verification."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
