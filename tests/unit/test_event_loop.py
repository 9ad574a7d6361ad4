"""The daemon's event loop: uvloop when installed, chosen or refused by
``$DRIFTOWNER_EVENT_LOOP``."""

from __future__ import annotations

import sys

import pytest
import uvloop

from driftowner import cli
from driftowner.daemon import EVENT_LOOP_ENV, EventLoopChoiceError, loop_factory


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", uvloop.new_event_loop),
        ("auto", uvloop.new_event_loop),
        ("uvloop", uvloop.new_event_loop),
        (" uvloop ", uvloop.new_event_loop),
        ("asyncio", None),
    ],
)
def test_the_loop_is_uvloop_when_installed_unless_asyncio_is_chosen(
    value: str, expected: object
) -> None:
    """Unset, ``auto`` or ``uvloop`` run on uvloop (installed here); ``asyncio`` on
    asyncio's own loop (None: asyncio's default)."""
    assert loop_factory({EVENT_LOOP_ENV: value}) is expected


def test_unset_means_auto() -> None:
    """No variable at all is ``auto``."""
    assert loop_factory({}) is uvloop.new_event_loop


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvloop missing: ``auto`` runs on asyncio's loop; ``uvloop`` asked for explicitly is an
    error that says so, not a silent fallback."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert loop_factory({EVENT_LOOP_ENV: "auto"}) is None
    with pytest.raises(EventLoopChoiceError, match="uvloop is not installed"):
        loop_factory({EVENT_LOOP_ENV: "uvloop"})


def test_an_unknown_loop_is_refused_naming_the_variable() -> None:
    """A typo is an error naming the variable and the choices."""
    with pytest.raises(EventLoopChoiceError) as caught:
        loop_factory({EVENT_LOOP_ENV: "tokio"})
    message = str(caught.value)
    assert EVENT_LOOP_ENV in message
    assert "'tokio'" in message
    assert "auto, uvloop, asyncio" in message


def test_run_with_an_unknown_loop_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``driftowner demo`` with a bad ``$DRIFTOWNER_EVENT_LOOP`` exits 2 with the reason on
    stderr, no traceback, and starts nothing."""
    monkeypatch.setenv(EVENT_LOOP_ENV, "tokio")
    code = cli.main(["demo", "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"driftowner: ${EVENT_LOOP_ENV}: 'tokio' is not one of auto, uvloop, asyncio" in err
    assert "Traceback" not in err
