"""Issue 13, item 1: a SKU imported into the catalogue while the daemon runs is routed on its next pass,
no restart: an order held `unknown_sku` is placed once after the operator releases it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from asyncio.subprocess import DEVNULL
from pathlib import Path

from relay.cli import main
from relay.domain.models import factory_order_key
from relay.store import open_store
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


async def relay(*argv: str) -> int:
    """The operator's command line (`main()` in a thread: it runs its own event loop, as the script does)."""
    return await asyncio.to_thread(main, list(argv))


async def test_a_sku_imported_while_the_daemon_runs_is_placed_after_release_without_restart(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        oid = h.storefront.add_order([SeedLine("TEE-RED-M"), SeedLine("NEW-HAT")])
        config = str(h.write_config(tmp_path / "relay.toml"))
        async with h.app() as app:
            await app.run_once()
            view = await app.store.find_order(1)
            assert (view.order.state, view.order.attention_reason) == ("held", "unknown_sku")
            assert "NEW-HAT" in view.order.attention_detail
            assert sum(f.held for f in h.factories.values()) == 0

            # The operator, with the daemon running: export, add the SKU, import, release.
            capsys.readouterr()
            assert await relay("-c", config, "skus", "export") == 0
            csv = tmp_path / "skus.csv"
            csv.write_text(capsys.readouterr().out + ",NEW-HAT,bolt,,,,0,true\n", encoding="utf-8")
            assert await relay("-c", config, "skus", "import", str(csv)) == 0
            assert "1 added, 0 changed, 0 removed" in capsys.readouterr().out
            assert await relay("-c", config, "release", "1") == 0

            await app.run_once()  # the same daemon: its router sees the new catalogue version
            await app.run_once()
            view = await app.store.find_order(1)
        assert view.order.state == "placed"
        assert h.factories["bolt"].deliveries == {factory_order_key("shop", oid, "bolt"): 1}
        assert h.factories["acme"].deliveries == {factory_order_key("shop", oid, "acme"): 1}
        bolt_lines = next(iter(h.factories["bolt"].orders.values())).payload["lines"]
        assert [ln["sku"] for ln in bolt_lines] == ["NEW-HAT"]


async def test_sighup_re_seeds_the_catalogue_from_the_config_and_the_router_uses_it(tmp_path):
    skus = {"TEE-RED-M": "acme"}
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("CAP-GRN")])
        async with h.app(install_signal_handlers=True, reload_sku_map=lambda: dict(skus)) as app:
            await app.run_once()
            assert (await app.store.find_order(1)).order.attention_reason == "unknown_sku"
            skus["CAP-GRN"] = "bolt"  # the operator edits the config's routing.skus
            runner = asyncio.create_task(app.run())
            try:
                for _ in range(500):  # run() installs its handlers as it starts
                    await asyncio.sleep(0.01)
                    if signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL:
                        break
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(500):
                    await asyncio.sleep(0.01)
                    if any(r.sku == "CAP-GRN" for r in await app.store.list_skus()):
                        break
                assert await app.store.retry_order(1, time.time()) == ["order requeued for routing"]
                app.router.wake()  # what its 5 s tick would do
                for _ in range(500):
                    await asyncio.sleep(0.01)
                    if h.factories["bolt"].held:
                        break
            finally:
                app.stop()
                await runner
        assert h.factories["bolt"].held == 1
        # The seed follows the config: TEE-RED-M stays, the default SKUs the config no longer lists left.
        rows = {(r.sku, r.factory, r.source) for r in await _skus(h.database)}
        assert rows == {("TEE-RED-M", "acme", "config"), ("CAP-GRN", "bolt", "config")}


async def _skus(database: str) -> list:
    store = open_store(database)
    await store.open()
    try:
        return await store.list_skus()
    finally:
        await store.close()


async def test_sighup_to_a_running_relay_process_re_reads_routing_skus(tmp_path):
    relay_bin = str(Path(sys.executable).with_name("relay"))
    async with Harness(tmp_path, sku_map={"TEE-RED-M": "acme"}) as h:
        h.storefront.add_order([SeedLine("CAP-GRN")])
        config = tmp_path / "relay.toml"
        h.write_config(config, inbound={"port": 0})
        env = {k: v for k, v in os.environ.items() if k != "RELAY_CRASH_AT"}
        migrate = await asyncio.create_subprocess_exec(relay_bin, "-c", str(config), "migrate", env=env)
        assert await asyncio.wait_for(migrate.wait(), 30) == 0
        proc = await asyncio.create_subprocess_exec(
            relay_bin, "-c", str(config), "run", env=env, stdout=DEVNULL, stderr=DEVNULL
        )
        try:
            for _ in range(200):  # up and routing: the order is held unknown_sku
                await asyncio.sleep(0.05)
                if [r.sku for r in await _skus(h.database)] == ["TEE-RED-M"] and await _held(h.database):
                    break
            assert await _held(h.database)
            h.write_config(config, inbound={"port": 0}, routing={"skus": {"CAP-GRN": "bolt"}})
            proc.send_signal(signal.SIGHUP)
            for _ in range(200):
                await asyncio.sleep(0.05)
                if any(r.sku == "CAP-GRN" for r in await _skus(h.database)):
                    break
            assert {(r.sku, r.factory) for r in await _skus(h.database)} == {
                ("TEE-RED-M", "acme"),
                ("CAP-GRN", "bolt"),
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0


async def _held(database: str) -> bool:
    store = open_store(database)
    await store.open()
    try:
        view = await store.find_order(1)
        return view is not None and view.order.attention_reason == "unknown_sku"
    finally:
        await store.close()
