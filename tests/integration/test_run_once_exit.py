"""Issue 11, item 13: `relay run --once` exited 0 when every storefront was unreachable, so cron and
monitoring never saw it. Now any component failing during the pass makes it exit EX_TEMPFAIL (75), also
when only one of two storefronts failed and the rest of the pass went through, and says which."""

from __future__ import annotations

import socket

from structlog.testing import capture_logs

from relay.cli.common import EX_OK, EX_TEMPFAIL
from relay.cli.daemon import _run
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


def dead_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def down_storefront(h: Harness) -> dict[str, object]:
    return {"adapter": "demo", **h.storefront.adapter_options(), "url": dead_url()}


async def test_once_exits_tempfail_when_every_storefront_is_unreachable(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        settings = h.settings(storefronts={"shop": down_storefront(h)})
        with capture_logs() as logs:
            rc = await _run(settings, h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
    assert rc == EX_TEMPFAIL
    err = capsys.readouterr().err
    assert "poller:shop" in err and str(EX_TEMPFAIL) in err
    assert [e["failed"] for e in logs if e["event"] == "once_failed"] == [["poller:shop"]]
    assert any(e["event"] == "storefront_unavailable" for e in logs)


async def test_once_exits_tempfail_when_one_of_two_storefronts_is_unreachable_and_the_other_still_flows(
    tmp_path, capsys
):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(storefronts={"down": down_storefront(h)})
        rc = await _run(settings, h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
        held = h.factories["acme"].held
    assert rc == EX_TEMPFAIL
    assert held == 1  # the reachable storefront's order was still placed
    err = capsys.readouterr().err
    assert "poller:down" in err and "poller:shop" not in err


async def test_once_exits_tempfail_when_a_factory_is_unreachable(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        settings = h.settings(factories={"acme": {"url": dead_url()}})
        rc = await _run(settings, h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
    assert rc == EX_TEMPFAIL
    assert "factory:acme" in capsys.readouterr().err


async def test_once_exits_ok_when_everything_worked(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        rc = await _run(h.settings(), h.registry, once=True, sleep=h.sleep, install_signal_handlers=False)
        held = h.factories["acme"].held
    assert (rc, held) == (EX_OK, 1)
    assert capsys.readouterr().err == ""
