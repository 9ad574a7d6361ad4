"""The ``email`` channel: a multipart (plain text + HTML) mail sent through an SMTP relay with
aiosmtplib, threaded per incident and address, and the mapping of SMTP outcomes to deliveries.

Threads: the first mail of an incident to an address is the thread's root; its
``Message-ID`` comes back as the delivery's ``ref`` and every later mail to that address
names it in ``In-Reply-To`` and ``References``. Every mail of the incident has the same
subject (``Re:`` before it on replies) and a ``Thread-Topic``, so Gmail (which also groups by
subject) and Outlook (by topic) keep one conversation. Subject, text and HTML come from Jinja2
templates, a group's mail as a single one's: the packaged ones, or those of a ``templates_dir``
that overrides them by name (``email_subject.txt``, ``message.txt``, ``message.html``;
``group_subject.txt``, ``group.txt``, ``group.html``).

SMTP says whether a failure is temporary: 4xx replies (greylisting, mailbox busy, ``451``)
are worth retrying, 5xx replies (unknown recipient, ``535`` bad credentials) are not.
Connection trouble and timeouts are retried; TLS verification failures are not.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import jinja2
from pydantic import SecretStr

from driftowner import render
from driftowner.channels import safe_detail, timeout_seconds
from driftowner.grouping import group_key
from driftowner.model import Delivery, Evidence, GroupThread, Message, Notification

MESSAGE_ID_DOMAIN = "driftowner"
# Python's header folder doubles the space before an encoded word it wraps onto a new line
# ("falling  — owner"), so headers are only folded past RFC 5322's hard limit of 998.
_WIRE_POLICY = SMTP.clone(max_line_length=998)
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _id_part(value: str) -> str:
    return _ID_UNSAFE.sub("-", value) or "-"


def message_id(notification_id: str) -> str:
    """The Message-ID of one notification's mail. Stable across retries, so a mail the relay
    accepted twice (at-least-once delivery) can be recognised as one."""
    return f"<notification-{_id_part(notification_id)}@{MESSAGE_ID_DOMAIN}>"


TEMPLATE_NAMES = ("email_subject.txt", "message.txt", "message.html")
"""A single mail's subject, text and HTML templates."""
GROUP_TEMPLATE_NAMES = ("group_subject.txt", "group.txt", "group.html")
"""A group's mail's subject, text and HTML templates. A ``templates_dir`` may override any of
these and :data:`TEMPLATE_NAMES`; those it lacks come from the package."""


class TemplateProblem(ValueError):
    """A mail template that cannot be loaded or rendered; the message names the template
    file and line."""


class MailTemplates:
    """The subject, text and HTML templates of the email channel, for single and group mails.

    Args:
        directory: Templates that override the packaged ones by name, if any.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._env = render.template_environment(directory)

    def render(self, message: Message) -> tuple[str, str, str]:
        """``(subject, text, html)`` of one message.

        Raises:
            TemplateProblem: a template has a syntax error or fails while rendering (an
                unknown variable, ...), naming the file and line.
        """
        values = render.context(message)
        values["subject_summary"] = render.clipped_summary(message)
        values["thread_topic"] = render.thread_topic(message)
        return self._render(TEMPLATE_NAMES, values)

    def render_group(
        self, messages: Sequence[Message], root: Sequence[Message] = ()
    ) -> tuple[str, str, str]:
        """``(subject, text, html)`` of a group's mail: the templates see what
        :func:`driftowner.render.group_context` gives, and ``thread_topic``, what the group's
        thread is about (:func:`driftowner.render.group_topic` of ``root``, the incidents its
        first mail listed; of ``messages`` when empty).

        Raises:
            TemplateProblem: as for :meth:`render`.
        """
        values = render.group_context(messages)
        values["thread_topic"] = render.group_topic(root or messages)
        return self._render(GROUP_TEMPLATE_NAMES, values)

    def _render(self, names: tuple[str, str, str], values: dict[str, Any]) -> tuple[str, str, str]:
        """The subject (on one line), text and HTML templates ``names`` over ``values``."""
        out = []
        for name in names:
            try:
                out.append(self._env.get_template(name).render(values))
            except jinja2.TemplateSyntaxError as exc:
                where = exc.filename or name
                raise TemplateProblem(f"{where}, line {exc.lineno}: {exc.message}") from None
            except jinja2.TemplateError as exc:
                raise TemplateProblem(f"{self._where(name)}: {exc}") from None
        return render.one_line(out[0]), out[1], out[2]

    def _where(self, name: str) -> str:
        if self._directory is not None and (self._directory / name).is_file():
            return str(self._directory / name)
        return name

    def check(self) -> None:
        """Render a sample message with every field set, and a sample group of two, so that a
        broken template is an error when the config loads, not when the first page is sent.

        Raises:
            TemplateProblem: as for :meth:`render`.
        """
        sample = sample_message()
        self.render(sample)
        other = dataclasses.replace(
            sample, incident_id="inc-9876543210", system="churn-model", purpose="resolved"
        )
        self.render_group([sample, other])


def sample_message() -> Message:
    """The message a template check renders: every field set."""
    return Message(
        purpose="escalated",
        incident_id="inc-0123456789",
        system="fraud-scoring",
        owner="alice",
        owner_name="Alice Chen",
        kind="disagreement",
        rule="disagreement:accuracy-fine-adoption-falling",
        state="open",
        layers=("model", "business"),
        summary="accuracy fine, adoption falling",
        evidence=(
            Evidence("accuracy", "model", "ok", "0.95 >= min 0.90", 0.95, None, 0.9),
            Evidence("adoption", "business", "degraded", "0.41 < 0.53", 0.41, 0.66, 0.53),
        ),
        opened_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        age_seconds=900.0,
        step=2,
        recipient_name="Bob Diaz",
        runbook="https://wiki.example.com/fraud-scoring",
        incident_url="https://driftowner.example.com/incidents/inc-0123456789",
        ack_url="https://driftowner.example.com/a/ack",
        resolve_url="https://driftowner.example.com/a/resolve",
        note="looking at it",
        actor="alice",
    )


def build_email(
    notification: Notification,
    sender: str,
    now: datetime,
    templates: MailTemplates | None = None,
) -> EmailMessage:
    """The mail for one notification: subject, text and HTML parts, threading headers.

    Args:
        notification: What to send and to whom (``address`` is the To address; ``thread``
            the Message-ID of its conversation's first mail, if one was delivered).
        sender: The From address.
        now: The Date header's time.
        templates: The templates to render (default: the packaged ones).

    Raises:
        ValueError: when an address or header value cannot be put into a mail.
        TemplateProblem: when a template fails.
    """
    message = notification.message
    subject, text, html = (templates or MailTemplates()).render(message)
    mail = EmailMessage()
    mail["Subject"] = f"Re: {subject}" if notification.thread else subject
    mail["Thread-Topic"] = subject
    mail["From"] = sender
    mail["To"] = notification.address
    mail["Date"] = format_datetime(now.astimezone(UTC))
    mail["Message-ID"] = message_id(notification.id)
    if notification.thread:
        mail["In-Reply-To"] = notification.thread
        mail["References"] = notification.thread
    # RFC 3834: tells vacation responders and ticket systems not to answer a robot.
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Driftowner-Incident"] = render.one_line(message.incident_id)
    mail["X-Driftowner-Purpose"] = message.purpose
    mail.set_content(text)
    mail.add_alternative(html, subtype="html")
    return mail


def build_group_email(
    notifications: Sequence[Notification],
    sender: str,
    now: datetime,
    thread: GroupThread | None = None,
    templates: MailTemplates | None = None,
) -> EmailMessage:
    """One mail for a group of notifications to one address (see :mod:`driftowner.grouping`),
    each incident listed with its links, the group's summary (what changed) first. It threads
    under no incident (it spans several): the group's first mail is its own thread's root,
    and a later one names that root (``thread.ref``, its Message-ID) in ``In-Reply-To`` and
    ``References``. Every mail of the thread has the same subject, the thread's topic (what
    its root listed: :func:`driftowner.render.group_topic`), ``Re:`` before it on replies.
    Subject, text and HTML are the ``group_*`` templates (default: the packaged ones).

    Raises:
        ValueError: when an address or header value cannot be put into a mail.
        TemplateProblem: when a template fails.
    """
    messages = [n.message for n in notifications]
    ref = thread.ref if thread is not None else None
    root = thread.listed[: thread.root_size] if thread is not None else ()
    subject, text, html = (templates or MailTemplates()).render_group(messages, root)
    mail = EmailMessage()
    mail["Subject"] = f"Re: {subject}" if ref else subject
    mail["Thread-Topic"] = subject
    mail["From"] = sender
    mail["To"] = notifications[0].address
    mail["Date"] = format_datetime(now.astimezone(UTC))
    mail["Message-ID"] = message_id(group_key(notifications))
    if ref:
        mail["In-Reply-To"] = ref
        mail["References"] = ref
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Driftowner-Group"] = str(len(notifications))
    mail.set_content(text)
    mail.add_alternative(html, subtype="html")
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
        templates_dir: Templates overriding the packaged ones by name.
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
        templates_dir: Path | None = None,
    ) -> None:
        self.name = name
        self._templates = MailTemplates(templates_dir)
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
            mail = build_email(notification, self._sender, datetime.now(UTC), self._templates)
        except TemplateProblem as exc:
            return Delivery.give_up(safe_detail(f"email: a template failed: {exc}"))
        except (ValueError, TypeError, IndexError) as exc:
            return Delivery.give_up(
                safe_detail(f"email: cannot build the mail: {exc}", self._secrets())
            )
        # A first mail's Message-ID is the root later mails of its conversation refer to.
        return await self._send_mail(mail, root=notification.thread is None)

    async def send_group(
        self, notifications: Sequence[Notification], thread: GroupThread | None = None
    ) -> Delivery:
        """Send a group's mail (one for all its notifications); the outcome is every
        member's. The group's first mail's Message-ID comes back as the ``ref`` its later
        mails reply to."""
        ref = thread.ref if thread is not None else None
        try:
            mail = build_group_email(
                notifications, self._sender, datetime.now(UTC), thread, self._templates
            )
        except TemplateProblem as exc:
            return Delivery.give_up(safe_detail(f"email: a template failed: {exc}"))
        except (ValueError, TypeError, IndexError) as exc:
            return Delivery.give_up(
                safe_detail(f"email: cannot build the mail: {exc}", self._secrets())
            )
        return await self._send_mail(mail, root=ref is None)

    async def _send_mail(self, mail: EmailMessage, root: bool) -> Delivery:
        """Send one built mail; ``root``: its Message-ID comes back as the delivery's ref."""
        try:
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
        ref = str(mail["Message-ID"]) if root else None
        return Delivery.delivered(safe_detail(reply, self._secrets()), ref=ref)

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
