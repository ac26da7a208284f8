"""Issue 12: `relay status` / `orders` / `show` against a live daemon's database, from a shell where none
of the daemon's secrets are set; a missing database path exits 66 and creates nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

RELAY = str(Path(sys.executable).with_name("relay"))
SECRET_PREFIX = "RELAY_LIVE_TEST_"


async def relay(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the console script without blocking the loop the fakes run on: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        RELAY, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_with_secrets_from_env(h: Harness, path: Path) -> dict[str, str]:
    """Write the harness config with every secret as `{ env = ... }`; return those variables."""
    secrets: dict[str, str] = {f"{SECRET_PREFIX}SHOP_TOKEN": h.storefront.adapter_options()["token"]}
    factories: dict[str, Any] = {}
    for name, fake in h.factories.items():
        secrets[f"{SECRET_PREFIX}{name.upper()}_SIGNING"] = fake.signing_secret
        secrets[f"{SECRET_PREFIX}{name.upper()}_CALLBACK"] = fake.callback_secret
        factories[name] = {"signing_secret": {"env": f"{SECRET_PREFIX}{name.upper()}_SIGNING"}}
    h.write_config(
        path,
        inbound={"enabled": False},
        storefronts={"shop": {"token": {"env": f"{SECRET_PREFIX}SHOP_TOKEN"}}},
        factories=factories,
    )
    text = path.read_text()
    for name, fake in h.factories.items():
        text = text.replace(
            f"callback_secrets = {json.dumps([fake.callback_secret])}",
            f'callback_secrets = [{{ env = "{SECRET_PREFIX}{name.upper()}_CALLBACK" }}]',
        )
    path.write_text(text)
    for value in secrets.values():
        assert value not in text
    return secrets


async def test_status_orders_and_show_on_a_live_daemons_database_with_no_secrets_set(tmp_path):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        h.storefront.add_order([SeedLine("HAT")])  # unknown SKU: held
        config = tmp_path / "relay.toml"
        secrets = config_with_secrets_from_env(h, config)
        bare = {
            k: v for k, v in os.environ.items() if not k.startswith(SECRET_PREFIX) and k != "RELAY_CONFIG"
        }
        daemon = await asyncio.create_subprocess_exec(
            RELAY,
            "-c",
            str(config),
            "run",
            env={**bare, **secrets},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            code, _, err = await relay("-c", str(config), "check", env=bare)
            assert code == 78 and f"{SECRET_PREFIX}SHOP_TOKEN is not set" in err  # the secrets are unset
            status: dict[str, Any] = {}
            for _ in range(1000):  # until the daemon placed one order and held the other
                code, out, err = await relay("-c", str(config), "status", "--json", env=bare)
                if code == 0:
                    status = json.loads(out)
                    if (status["orders_by_state"]["placed"], status["orders_by_state"]["held"]) == (1, 1):
                        break
                else:
                    assert code == 66, err  # the daemon has not created the database yet
                await asyncio.sleep(0.02)
            assert (status["orders_by_state"]["placed"], status["orders_by_state"]["held"]) == (1, 1)
            (shop,) = status["storefronts"]
            assert shop["name"] == "shop" and shop["last_poll_ok_at"] and not shop["failing"]
            assert [(a["number"], a["reason"]) for a in status["attention"]] == [("#1002", "unknown_sku")]
            assert h.factories["acme"].held == 1

            code, out, _ = await relay("-c", str(config), "status", env=bare)
            assert code == 0 and "Storefronts" in out and "unmapped SKUs: HAT" in out
            code, out, _ = await relay("-c", str(config), "orders", "--state", "held", env=bare)
            assert code == 0 and out.splitlines()[1].split()[:4] == ["2", "shop:1002", "#1002", "held"]
            code, out, _ = await relay("-c", str(config), "show", "#1001", env=bare)
            assert code == 0 and "delivered: the factory accepted it" in out

            missing = tmp_path / "elsewhere" / "relay.db"
            code, out, err = await relay("--database", str(missing), "status", env=bare)
            assert (code, out) == (66, "") and err.count("\n") == 1 and str(missing) in err
            assert not missing.parent.exists()
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
