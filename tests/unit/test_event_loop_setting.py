"""`[daemon] event_loop` (issue 15): `auto` runs uvloop when it is installed, `asyncio` never does, and
`uvloop` without uvloop installed is a config error by its key. The daemon's inbound server takes
callbacks on uvloop (its connection guard once refused uvloop's transports)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import ValidationError

from relay.cli.daemon import event_loop_factory
from relay.config import DaemonSettings
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """uvloop as if it were not installed: not importable, not found."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else find_spec(name, *a)
    )
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    yield


def loop_of(setting: str) -> type[asyncio.AbstractEventLoop]:
    loop = event_loop_factory(DaemonSettings(event_loop=setting))()  # type: ignore[arg-type]
    try:
        return type(loop)
    finally:
        loop.close()


def test_auto_is_the_default_and_runs_uvloop_when_installed() -> None:
    assert DaemonSettings().event_loop == "auto"
    assert loop_of("auto") is uvloop.Loop
    assert loop_of("uvloop") is uvloop.Loop


def test_asyncio_never_uses_uvloop() -> None:
    assert not issubclass(loop_of("asyncio"), uvloop.Loop)


@pytest.mark.usefixtures("without_uvloop")
def test_auto_falls_back_to_asyncio_without_uvloop() -> None:
    assert not issubclass(loop_of("auto"), uvloop.Loop)


@pytest.mark.usefixtures("without_uvloop")
def test_asking_for_uvloop_without_it_is_an_error_by_key() -> None:
    with pytest.raises(ValidationError) as raised:
        DaemonSettings(event_loop="uvloop")
    assert "event_loop" in str(raised.value) and "uvloop is not installed" in str(raised.value)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValidationError, match="event_loop"):
        DaemonSettings(event_loop="trio")  # type: ignore[arg-type]


def test_an_order_goes_end_to_end_with_the_daemon_on_uvloop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[int, int]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with Harness(tmp_path) as h, h.app() as app:
            order_id = h.storefront.add_order([SeedLine("TEE-RED-M")])
            await app.run_once()  # polled, routed, delivered
            h.factories["acme"].callback_attempts = 1
            await h.factories["acme"].ship_all()  # the parcel comes back through the inbound server
            await app.run_once()  # tracking pushed
            return next(iter(h.factories["acme"].acked.values()), 0), len(h.storefront.fulfilments(order_id))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        acked, fulfilments = runner.run(scenario())
    assert acked == 200  # the guard refused every connection on uvloop before (an isinstance assert)
    assert fulfilments == 1
