"""The email channel against a real SMTP server (aiosmtpd) on loopback, with STARTTLS or
implicit TLS using a throwaway CA from trustme; certificate verification stays on."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from driftowner import runner, service
from driftowner.channels import build_channel
from driftowner.channels.email import EmailChannel, message_id
from driftowner.channels.log import LogChannel
from driftowner.config import EmailChannelConfig
from driftowner.configload import ConfigError, load_config_text
from driftowner.cycle import Pager
from driftowner.model import Delivery, Evidence, GroupThread, Notification
from driftowner.outbox import Deliverer, deliver_due
from driftowner.store import Changes, MemoryStore
from tests.unit import factories

pytestmark = pytest.mark.integration

USERNAME = "driftowner"
PASSWORD = "s3cret-Pa55word"
SENDER = "driftowner@example.com"


def notification(
    notification_id: str = "notif-1", address: str = "alice@example.com", **changes: Any
) -> Notification:
    """An email to Alice about incident inc-42; ``changes`` replace fields of its message."""
    return factories.notification(
        notification_id,
        channel="email",
        address=address,
        created_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        message=factories.full_message(incident_id="inc-42", **changes),
    )


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 OK: queued"


class RejectRecipient(Mailbox):
    """Refuses every recipient permanently."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"


class Greylist(Mailbox):
    """Refuses every message temporarily, like a greylisting relay."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "451 4.7.1 Greylisted, please try again later"


class GreylistRecipient(Mailbox):
    """Refuses every recipient temporarily (mailbox busy)."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        return "450 4.2.1 Mailbox busy, try again later"


def authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (USERNAME, PASSWORD)
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tls:
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(ca_file=ca_file, server_context=context)


@dataclass
class Server:
    port: int
    handler: Mailbox


def serve(handler: Mailbox, tls: Tls, *, implicit_tls: bool = False, auth: bool = False) -> Any:
    port = free_port()
    kwargs: dict[str, Any] = {}
    if implicit_tls:
        kwargs["ssl_context"] = tls.server_context
    else:
        kwargs["tls_context"] = tls.server_context
        kwargs["require_starttls"] = True
    if auth:
        kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, Server(port, handler)


@pytest.fixture
def mailbox(tls: Tls) -> Iterator[Server]:
    controller, server = serve(Mailbox(), tls)
    yield server
    controller.stop()


def channel(
    port: int,
    tls: Tls | None,
    *,
    starttls: bool = True,
    use_tls: bool = False,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5,
    templates_dir: Path | None = None,
) -> EmailChannel:
    return EmailChannel(
        "email",
        host="127.0.0.1",
        port=port,
        starttls=starttls,
        use_tls=use_tls,
        username=username,
        password=SecretStr(password) if password is not None else None,
        sender=SENDER,
        timeout=timedelta(seconds=timeout),
        ca_file=tls.ca_file if tls else None,
        templates_dir=templates_dir,
    )


def group_members(count: int, **changes: Any) -> list[Notification]:
    """``count`` notifications to alice about model-0, model-1, ... fed by features-v3,
    each with its own acknowledge link, as a group sends them; ``changes`` replace fields
    of each message."""
    return [
        dataclasses.replace(
            notification(
                f"notif-{i}",
                system=f"model-{i}",
                upstreams=("features-v3",),
                ack_url=f"https://driftowner.example.com/a/ack-{i}",
                **changes,
            ),
            thread="<notification-old@driftowner>",
        )
        for i in range(count)
    ]


async def send_to(
    handler: Mailbox,
    tls: Tls,
    *,
    implicit_tls: bool = False,
    auth: bool = False,
    **channel_options: Any,
) -> Delivery:
    """Serve ``handler`` (as ``serve`` does), send one notification through a channel to it
    (``channel_options`` as ``channel`` takes them), stop the server and say how it went."""
    controller, server = serve(handler, tls, implicit_tls=implicit_tls, auth=auth)
    try:
        return await channel(server.port, tls, **channel_options).send(notification())
    finally:
        controller.stop()


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def test_mail_over_starttls_names_every_required_field(mailbox: Server, tls: Tls) -> None:
    """Over verified STARTTLS the relay receives one multipart mail to the notification's
    address whose subject, text and HTML name system, owner, layers, evidence, age, step,
    state, summary, runbook and links."""
    sent = notification(
        purpose="opened",
        system="fraud-scoring",
        owner_name="Alice Chen",
        state="open",
        layers=("model", "business"),
        summary="accuracy fine, adoption falling",
        evidence=(
            Evidence("accuracy", "model", "ok", "0.95 >= min 0.90"),
            Evidence("adoption", "business", "degraded", "0.41 < 0.53 (20% below 0.66)"),
        ),
        age_seconds=252,
        step=1,
        runbook="https://wiki.example.com/fraud-scoring",
        incident_url="https://driftowner.example.com/incidents/inc-42",
        ack_url="https://driftowner.example.com/a/ack-token",
        resolve_url="https://driftowner.example.com/a/resolve-token",
    )
    delivery = await channel(mailbox.port, tls).send(sent)
    assert delivery.ok
    assert "queued" in delivery.detail
    [mail] = mailbox.handler.messages
    assert mailbox.handler.envelopes == [(SENDER, ["alice@example.com"])]
    assert mail["To"] == "alice@example.com"
    assert mail["From"] == SENDER
    # The thread's topic (its rule), not the summary a reopening rewrites.
    assert mail["Subject"] == "[driftowner] fraud-scoring: accuracy fine adoption falling (inc-42)"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = parts(mail)
    for body in (text, html):
        for needle in (
            "fraud-scoring",
            "Alice Chen",
            "model, business",
            (
                "accuracy (model): ok — 0.95 &gt;= min 0.90"
                if body is html
                else "accuracy (model): ok — 0.95 >= min 0.90"
            ),
            "4m 12s",
            "step 1",
            "open",
            "accuracy fine, adoption falling",
            "https://wiki.example.com/fraud-scoring",
            "https://driftowner.example.com/a/ack-token",
            "https://driftowner.example.com/a/resolve-token",
            "https://driftowner.example.com/incidents/inc-42",
            "OPEN fraud-scoring",
        ):
            assert needle in body, needle


async def test_later_mails_reply_to_the_first_mails_message_id(mailbox: Server, tls: Tls) -> None:
    """The first mail of a conversation starts the thread: no In-Reply-To, and its
    Message-ID (stable, from the notification) comes back as the delivery's ref. A later mail
    given that ref names it in In-Reply-To and References, and keeps the subject (``Re:``
    before it) and the Thread-Topic, so Gmail and Outlook show one conversation."""
    sender = channel(mailbox.port, tls)
    first = await sender.send(notification("notif-1"))
    assert first.ref == message_id("notif-1") == "<notification-notif-1@driftowner>"
    later = dataclasses.replace(
        notification("notif-2", purpose="escalated", step=2), thread=first.ref
    )
    second = await sender.send(later)
    assert second.ok and second.ref is None
    root, reply = mailbox.handler.messages
    assert root["Message-ID"] == first.ref
    assert root["In-Reply-To"] is None and root["References"] is None
    assert reply["Message-ID"] == message_id("notif-2")
    assert reply["In-Reply-To"] == reply["References"] == root["Message-ID"]
    assert reply["Subject"] == f"Re: {root['Subject']}"
    assert reply["Thread-Topic"] == root["Thread-Topic"] == root["Subject"]
    assert reply.get_body(preferencelist=("plain",)).get_content().startswith("ESCALATED")
    for mail in (root, reply):
        assert mail["Auto-Submitted"] == "auto-generated"
        assert mail["Date"]


async def test_a_group_is_one_mail_listing_each_incident(mailbox: Server, tls: Tls) -> None:
    """Three notifications to alice sent as a group arrive as one mail: the subject is the
    group's summary (the shared upstream, the tally), the text and HTML list each system with
    its own acknowledge link; it threads under no incident, and starts the group's own
    thread: its Message-ID is the delivery's ref, which the group's next mail replies to."""
    members = group_members(3)
    sender = channel(mailbox.port, tls)
    delivery = await sender.send_group(members)
    [mail] = mailbox.handler.messages
    assert delivery.ok and delivery.ref == mail["Message-ID"]
    assert mailbox.handler.envelopes == [(SENDER, ["alice@example.com"])]
    assert mail["Subject"].startswith("[driftowner] 3 systems fed by features-v3")
    assert mail["In-Reply-To"] is None and mail["X-Driftowner-Group"] == "3"
    for body in parts(mail):
        for i in range(3):
            assert f"model-{i}" in body and f"https://driftowner.example.com/a/ack-{i}" in body
    update = await sender.send_group(members[:1], GroupThread(delivery.ref))
    reply = mailbox.handler.messages[-1]
    assert update.ok and update.ref is None
    assert reply["In-Reply-To"] == reply["References"] == mail["Message-ID"]
    assert reply["Subject"].startswith("Re: [driftowner] 1 system")


async def test_a_templates_dir_overrides_the_packaged_templates(
    mailbox: Server, tls: Tls, tmp_path: Path
) -> None:
    """Templates in ``templates_dir`` replace the packaged ones by name; the others stay."""
    (tmp_path / "message.txt").write_text("Custom: {{ m.system }} owned by {{ m.owner_name }}\n")
    sender = EmailChannel(
        "email",
        host="127.0.0.1",
        port=mailbox.port,
        starttls=True,
        use_tls=False,
        username=None,
        password=None,
        sender=SENDER,
        timeout=timedelta(seconds=5),
        ca_file=tls.ca_file,
        templates_dir=tmp_path,
    )
    assert (await sender.send(notification())).ok
    [mail] = mailbox.handler.messages
    text, html = parts(mail)
    assert text.rstrip() == "Custom: fraud-scoring owned by Alice Chen"
    assert "<h2" in html and mail["Subject"].startswith("[driftowner] fraud-scoring")


GROUP_OVERRIDES = {
    "group_subject.txt": "[ops] {{ count }} for {{ recipient }}: {{ thread_topic }}",
    "group.txt": "Custom group: {% for e in entries %}{{ e.m.system }} {% endfor %}\n",
    "group.html": "<p>Custom group: {% for e in entries %}{{ e.m.system }} {% endfor %}</p>\n",
}


async def test_a_templates_dir_overrides_the_group_templates(
    mailbox: Server, tls: Tls, tmp_path: Path
) -> None:
    """A group's mail (most mail in a storm, grouping being on by default) takes its subject,
    text and HTML from ``group_subject.txt``, ``group.txt`` and ``group.html`` in
    ``templates_dir``, as single mails take theirs; the HTML part stays autoescaped, and a
    reply keeps the overriding subject with ``Re:`` before it."""
    for name, template in GROUP_OVERRIDES.items():
        (tmp_path / name).write_text(template)
    members = group_members(2)
    members[1] = dataclasses.replace(
        members[1], message=dataclasses.replace(members[1].message, system="model-<b>1</b>")
    )
    sender = channel(mailbox.port, tls, templates_dir=tmp_path)
    delivery = await sender.send_group(members)
    [mail] = mailbox.handler.messages
    assert delivery.ok, delivery.detail
    topic = "2 systems fed by features-v3 (opened within 0s)"
    assert mail["Subject"] == mail["Thread-Topic"] == f"[ops] 2 for Alice Chen: {topic}"
    text, html = parts(mail)
    assert text.rstrip() == "Custom group: model-0 model-<b>1</b>"
    assert html.rstrip() == "<p>Custom group: model-0 model-&lt;b&gt;1&lt;/b&gt; </p>"
    await sender.send_group(
        members[:1], GroupThread(delivery.ref, tuple(m.message for m in members), 2)
    )
    reply = mailbox.handler.messages[-1]
    assert reply["Subject"] == f"Re: [ops] 1 for Alice Chen: {topic}"


async def test_a_templates_dir_without_group_templates_keeps_the_packaged_ones(
    mailbox: Server, tls: Tls, tmp_path: Path
) -> None:
    """A directory overriding only the single mail's templates leaves a group's mail as the
    packaged group templates write it: the same subject and parts as with no directory."""
    (tmp_path / "message.txt").write_text("Custom: {{ m.system }}\n")
    (tmp_path / "email_subject.txt").write_text("[ops] {{ thread_topic }}")
    members = group_members(3)
    await channel(mailbox.port, tls, templates_dir=tmp_path).send_group(members)
    await channel(mailbox.port, tls).send_group(members)
    overridden, packaged = mailbox.handler.messages
    assert overridden["Subject"] == packaged["Subject"]
    assert overridden["Subject"].startswith("[driftowner] 3 systems fed by features-v3")
    assert parts(overridden) == parts(packaged)
    assert "model-2" in parts(overridden)[0] and "Custom" not in parts(overridden)[0]


async def test_authenticated_submission_over_tls(tls: Tls) -> None:
    """A relay that demands AUTH after STARTTLS accepts the right credentials."""
    relay = Mailbox()
    delivery = await send_to(relay, tls, auth=True, username=USERNAME, password=PASSWORD)
    assert delivery.ok, delivery.detail
    assert len(relay.messages) == 1


async def test_wrong_password_gives_up_without_showing_it(tls: Tls) -> None:
    """Bad credentials (535) will not get better by retrying; the password stays secret."""
    relay = Mailbox()
    wrong = "Wr0ng-but-secret"
    delivery = await send_to(relay, tls, auth=True, username=USERNAME, password=wrong)
    assert not delivery.ok
    assert not delivery.recoverable
    assert "535" in delivery.detail
    assert wrong not in delivery.detail
    assert PASSWORD not in delivery.detail
    assert relay.messages == []


async def test_missing_credentials_where_auth_is_required_gives_up(tls: Tls) -> None:
    """A relay that requires AUTH refuses an unauthenticated sender (530): give up."""
    delivery = await send_to(Mailbox(), tls, auth=True)
    assert not delivery.recoverable
    assert "530" in delivery.detail


async def test_rejected_recipient_gives_up(tls: Tls) -> None:
    """A 550 for the recipient is permanent: give up, quoting the relay."""
    delivery = await send_to(RejectRecipient(), tls)
    assert not delivery.ok
    assert not delivery.recoverable
    assert "550" in delivery.detail
    assert "no such user" in delivery.detail


@pytest.mark.parametrize("handler", [Greylist, GreylistRecipient], ids=["451-data", "450-rcpt"])
async def test_temporary_refusal_is_retried(tls: Tls, handler: type[Mailbox]) -> None:
    """4xx replies (greylisting, busy mailbox) are temporary: retry."""
    delivery = await send_to(handler(), tls)
    assert not delivery.ok
    assert delivery.recoverable
    assert "45" in delivery.detail


async def test_connection_refused_is_retried() -> None:
    """Nobody listening on the port: the relay may be restarting, retry."""
    port = free_port()
    delivery = await channel(port, None).send(notification())
    assert delivery.recoverable
    assert "\n" not in delivery.detail


async def test_silent_server_times_out_and_is_retried() -> None:
    """A server that accepts the connection but never greets is a timeout: retry."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        delivery = await channel(port, None, timeout=0.3).send(notification())
    assert delivery.recoverable
    assert "Timeout" in delivery.detail or "timed out" in delivery.detail.lower()


async def test_untrusted_certificate_gives_up(mailbox: Server) -> None:
    """Without the test CA the relay's certificate fails verification; verification is never
    switched off and retrying cannot fix it, so the delivery gives up."""
    delivery = await channel(mailbox.port, None).send(notification())
    assert not delivery.ok
    assert not delivery.recoverable
    assert "certificate" in delivery.detail.lower()
    assert mailbox.handler.messages == []


async def test_implicit_tls(tls: Tls) -> None:
    """``use_tls`` speaks TLS from the first byte (port 465 style) and delivers."""
    relay = Mailbox()
    delivery = await send_to(relay, tls, implicit_tls=True, starttls=False, use_tls=True)
    assert delivery.ok, delivery.detail
    assert len(relay.messages) == 1


async def test_hostile_address_gives_up_instead_of_injecting_headers(
    mailbox: Server, tls: Tls
) -> None:
    """An address with a line break cannot smuggle headers or recipients: give up."""
    delivery = await channel(mailbox.port, tls).send(
        notification(address="alice@example.com\r\nBcc: victim@example.com")
    )
    assert not delivery.ok
    assert not delivery.recoverable
    assert mailbox.handler.messages == []


def test_build_channel_makes_an_email_channel_without_io() -> None:
    """``build_channel`` maps an ``email`` config (``from`` included) to the channel."""
    config = EmailChannelConfig.model_validate(
        {"type": "email", "host": "smtp.invalid", "port": 587, "from": SENDER}
    )
    built = build_channel("email", config)
    assert isinstance(built, EmailChannel)
    assert built.name == "email"


def _config_with_templates(directory: Path) -> str:
    document = factories.base_config()
    document["channels"]["email"]["templates_dir"] = str(directory)
    return yaml.safe_dump(document)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% if m.system %}unclosed", "message.txt, line 1"),
        ("{{ m.no_such_field }}", "message.txt"),
    ],
    ids=["syntax-error", "unknown-field"],
)
def test_a_broken_template_is_a_located_config_error_at_load(
    tmp_path: Path, template: str, expected: str
) -> None:
    """A template that does not parse, or fails on a sample message, stops the config from
    loading with an error at ``channels.email.templates_dir`` naming the file (and the line
    of a syntax error); no traceback."""
    (tmp_path / "message.txt").write_text(template)
    with pytest.raises(ConfigError) as caught:
        load_config_text(_config_with_templates(tmp_path), name="d.yaml")
    (line,) = [e for e in caught.value.errors if "templates_dir" in e]
    assert line.startswith("d.yaml:") and "channels.email.templates_dir" in line
    assert expected in line and "Traceback" not in line


@pytest.mark.parametrize(
    ("name", "template", "expected"),
    [
        ("group.txt", "{% for e in entries %}unclosed", "group.txt, line 1"),
        ("group.html", "{{ entries[0].m.no_such_field }}", "group.html"),
        ("group_subject.txt", "{{ no_such_name }}", "group_subject.txt"),
    ],
    ids=["syntax-error", "unknown-field", "unknown-name"],
)
def test_a_broken_group_template_is_a_located_config_error_at_load(
    tmp_path: Path, name: str, template: str, expected: str
) -> None:
    """A group template that does not parse, or fails on a sample group, stops the config
    from loading (and so a reload from taking it) with an error at
    ``channels.email.templates_dir`` naming the file, as a single mail's template does."""
    (tmp_path / name).write_text(template)
    with pytest.raises(ConfigError) as caught:
        load_config_text(_config_with_templates(tmp_path), name="d.yaml")
    (line,) = [e for e in caught.value.errors if "templates_dir" in e]
    assert line.startswith("d.yaml:") and "channels.email.templates_dir" in line
    assert expected in line and "Traceback" not in line


def test_a_missing_templates_dir_is_a_config_error(tmp_path: Path) -> None:
    """A ``templates_dir`` that is not a directory is refused at load, by path."""
    with pytest.raises(ConfigError) as caught:
        load_config_text(_config_with_templates(tmp_path / "nope"), name="d.yaml")
    assert any("templates_dir" in e and "is not a directory" in e for e in caught.value.errors)


def test_good_override_templates_load(tmp_path: Path) -> None:
    """A directory overriding only the subject loads; the other templates stay packaged."""
    (tmp_path / "email_subject.txt").write_text("[ops] {{ m.system }} ({{ m.incident_id }})")
    config = load_config_text(_config_with_templates(tmp_path))
    assert config.channels["email"].templates_dir == tmp_path  # type: ignore[union-attr]


# -- threads as mail clients see them: every mail of a thread through the delivery loop --------


def _thread_loop(server: Server, tls: Tls) -> tuple[MemoryStore, Callable[[float], Any]]:
    """The delivery loop over a memory store, its email channel sending to ``server``, on an
    injected clock (grouping on: ``group_wait`` 3s, ``group_interval`` 30s); returns the store
    and ``drain_at(minutes)``."""
    store = MemoryStore()
    now = [factories.T0]
    deliverer = Deliverer(
        store,
        {"email": channel(server.port, tls)},
        factories.make_config(),
        lambda: now[0],
        pace_clock=lambda: now[0],
        jitter=lambda: 1.0,
    )

    async def drain_at(minutes: float) -> None:
        now[0] = factories.at(minutes)
        await deliverer.drain()

    return store, drain_at


def _mail(nid: str, incident_id: str, minutes: float, **changes: Any) -> Notification:
    """A mail to alice about ``incident_id``, made at ``minutes``."""
    return factories.notification(
        nid,
        channel="email",
        address="alice@example.com",
        created_at=factories.at(minutes),
        message=factories.full_message(incident_id=incident_id, **changes),
    )


def _normalised(subject: str) -> str:
    return subject.removeprefix("Re: ")


def _one_thread(mails: list[EmailMessage]) -> None:
    """The mails are one thread as Gmail and Outlook see it: the first is its root (no
    In-Reply-To), every later one names the root's Message-ID in In-Reply-To and References
    and carries the root's subject with ``Re:`` before it; Message-IDs are unique."""
    root, *replies = mails
    assert root["In-Reply-To"] is None and root["References"] is None
    assert not root["Subject"].startswith("Re: ")
    assert len({m["Message-ID"] for m in mails}) == len(mails)
    for reply in replies:
        assert reply["In-Reply-To"] == reply["References"] == root["Message-ID"]
        assert reply["Subject"] == f"Re: {root['Subject']}", reply["Subject"]
    assert {_normalised(m["Subject"]) for m in mails} == {root["Subject"]}


async def test_a_lone_incidents_mails_are_one_thread_with_one_subject(
    mailbox: Server, tls: Tls
) -> None:
    """One incident's first page, escalation, reopening (a new summary), acknowledgement and
    resolution reach aiosmtpd through the delivery loop as one thread: one normalised
    subject, every reply naming the first mail (a regression: the subject carried the
    summary, which a reopening rewrites, so the thread split)."""
    store, drain_at = _thread_loop(mailbox, tls)
    store.apply(Changes(opened=[factories.incident(id="inc-1")]))
    steps: list[tuple[float, dict[str, Any]]] = [
        (0, {"purpose": "opened", "step": 1}),
        (15, {"purpose": "escalated", "step": 2}),
        (60, {"purpose": "reopened", "step": 1, "summary": "adoption falling: 0.38 < 0.53"}),
        (70, {"purpose": "acknowledged", "state": "acknowledged", "actor": "alice"}),
        (90, {"purpose": "resolved", "state": "resolved", "step": 0}),
    ]
    for k, (minutes, changes) in enumerate(steps):
        store.apply(Changes(notifications=[_mail(f"n-{k}", "inc-1", minutes, **changes)]))
        await drain_at(minutes)
        await drain_at(minutes + 1)
    mails = mailbox.handler.messages
    assert [m["X-Driftowner-Purpose"] for m in mails] == [p["purpose"] for _, p in steps]
    _one_thread(mails)
    assert mails[0]["Subject"] == (
        "[driftowner] fraud-scoring: accuracy fine adoption falling (inc-1)"
    )
    assert mails[0]["Thread-Topic"] == mails[-1]["Thread-Topic"] == mails[0]["Subject"]


def _mails_to(mailbox: Server, address: str) -> list[EmailMessage]:
    """The mails the server received for ``address`` alone, in the order they came."""
    return [
        mail
        for mail, (_, to) in zip(mailbox.handler.messages, mailbox.handler.envelopes, strict=True)
        if to == [address]
    ]


async def test_a_groups_mails_are_one_thread_with_one_subject(mailbox: Server, tls: Tls) -> None:
    """Two incidents paged together (the group's root), escalated together, one
    acknowledged, both resolved: four group mails to alice, one thread with one normalised
    subject (what the root listed), whatever each update's summary says (a regression: the
    subject was each update's summary, "2 ... 2 ESCALATED", "1 ... 1 ACKNOWLEDGED", ...)."""
    store, drain_at = _thread_loop(mailbox, tls)
    pair = ("inc-a", "inc-b")
    store.apply(Changes(opened=[factories.incident(id=i, system=f"m-{i}") for i in pair]))
    steps: list[tuple[float, tuple[str, ...], dict[str, Any]]] = [
        (0, pair, {"purpose": "opened", "step": 1}),
        (15, pair, {"purpose": "escalated", "step": 2}),
        (20, pair[:1], {"purpose": "acknowledged", "state": "acknowledged", "actor": "alice"}),
        (60, pair, {"purpose": "resolved", "state": "resolved", "step": 0}),
    ]
    for k, (minutes, incidents, changes) in enumerate(steps):
        made = [
            _mail(f"n-{k}-{i}", i, minutes, system=f"m-{i}", upstreams=("features-v3",), **changes)
            for i in incidents
        ]
        store.apply(Changes(notifications=made))
        await drain_at(minutes)
        await drain_at(minutes + 1)
    mails = mailbox.handler.messages
    assert [m["X-Driftowner-Group"] for m in mails] == ["2", "2", "1", "2"]
    _one_thread(mails)
    assert mails[0]["Subject"] == "[driftowner] 2 systems fed by features-v3 (opened within 0s)"
    firsts = [parts(m)[0].splitlines()[0] for m in mails]
    assert firsts[2].endswith("1 ACKNOWLEDGED") and firsts[3].endswith("2 RESOLVED")


async def test_an_escalation_past_the_owner_replies_in_the_owners_mail_thread(
    mailbox: Server, tls: Tls
) -> None:
    """Step 1 mails Alice; at 15m step 2 pages bob on the console. Through the escalation
    stage and the outbox, Alice's mail thread gets a reply telling of step 2: In-Reply-To
    and References name her first mail, the subject is the thread's with ``Re:``, and the
    text says the step (a regression: the owner's thread heard nothing of the escalation)."""
    config = factories.make_config(
        {
            "escalation_chains": {
                "standard": {
                    "steps": [
                        {"notify": "owner", "via": ["email"]},
                        {"after": "15m", "notify": ["bob"], "via": ["console"]},
                    ]
                }
            },
        }
    )
    store = MemoryStore()
    channels = {"email": channel(mailbox.port, tls), "console": LogChannel("console")}
    pager = Pager(factories.ids("n"), factories.links)
    store.apply(Changes(opened=[factories.incident(config, ack_within=None, resolve_within=None)]))
    runner.escalate(store, config, factories.T0, pager)
    await deliver_due(store, channels, lambda: factories.at(1))
    runner.escalate(store, config, factories.at(15), pager)
    await deliver_due(store, channels, lambda: factories.at(16))
    to_alice = _mails_to(mailbox, "alice@example.com")
    assert [m["X-Driftowner-Purpose"] for m in to_alice] == ["opened", "stepped_up"]
    _one_thread(to_alice)
    text, _ = parts(to_alice[1])
    assert "step 2" in text


async def test_a_note_replies_in_the_owners_mail_thread(mailbox: Server, tls: Tls) -> None:
    """Step 1 mails Alice; then Alice's note (``service.add_note``, from the command line)
    goes, through the store and the outbox, as a reply in her mail thread: In-Reply-To and
    References name her first mail, the subject is the thread's with ``Re:``, and the text
    carries the note under ``Note from alice`` (a regression: a note outside an ack or a
    resolution never reached the thread)."""
    config = factories.make_config(
        {
            "escalation_chains": {
                "standard": {"steps": [{"notify": "owner", "via": ["email"]}], "repeat": 0}
            }
        }
    )
    store = MemoryStore()
    channels = {"email": channel(mailbox.port, tls)}
    pager = Pager(factories.ids("n"), factories.links)
    store.apply(Changes(opened=[factories.incident(config, ack_within=None, resolve_within=None)]))
    runner.escalate(store, config, factories.T0, pager)
    await deliver_due(store, channels, lambda: factories.at(1))
    service.add_note(
        store,
        config,
        "inc-1",
        "alice",
        "rolled back features-v3, watching",
        factories.at(5),
        "cli",
        factories.links,
    )
    await deliver_due(store, channels, lambda: factories.at(6))
    to_alice = _mails_to(mailbox, "alice@example.com")
    assert [m["X-Driftowner-Purpose"] for m in to_alice] == ["opened", "noted"]
    _one_thread(to_alice)
    text, html = parts(to_alice[1])
    assert "Note from alice:\n  rolled back features-v3, watching" in text.replace("\r\n", "\n")
    assert "rolled back features-v3, watching" in html
