"""deploy/relay.service and deploy/Containerfile say what README promises, and what they run exists."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli.common import EX_CONFIG
from relay.config import DaemonSettings
from relay.testing.harness import Harness

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RELAY = str(Path(sys.executable).with_name("relay"))


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values]}} (keys may repeat; comments and blanks skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


SERVICE = unit(DEPLOY / "relay.service")["Service"]


def one(key: str) -> str:
    assert len(SERVICE.get(key, [])) == 1, f"{key}= must be set once"
    return SERVICE[key][0]


def test_the_unit_is_a_notify_service_with_a_watchdog_and_sane_restarts():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert seconds(one("WatchdogSec")) >= 10  # relay pings every half of it
    assert one("Restart") == "on-failure"
    assert str(EX_CONFIG) in one("RestartPreventExitStatus").split()  # a config error does not loop
    assert one("KillSignal") == "SIGTERM"
    grace = DaemonSettings().shutdown_grace_s
    assert seconds(one("TimeoutStopSec")) > grace + 10  # the drain, then closing the store
    # `systemctl reload`: relay re-seeds its SKU catalogue from the config on SIGHUP
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"


def test_the_unit_is_hardened_and_takes_secrets_as_credentials():
    assert one("User") == "relay" and one("Group") == "relay"  # operators run `sudo -u relay relay ...`
    assert one("StateDirectory") == "relay"
    assert one("ProtectSystem") == "strict"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "PrivateDevices"):
        assert one(key) == "yes", key
    assert one("CapabilityBoundingSet") == ""
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in SERVICE["SystemCallFilter"]
    credentials = [value.split(":", 1) for value in SERVICE["LoadCredential"]]
    assert credentials and all(name and source.startswith("/etc/relay/") for name, source in credentials)


def test_the_unit_runs_an_existing_relay_command():
    argv = shlex.split(one("ExecStart"))
    assert Path(argv[0]).name == "relay" and argv[1] == "-c" and argv[3:] == ["run"]
    # `relay run` exists (its help exits 0); an unknown command would be a usage error
    done = subprocess.run([RELAY, "-c", argv[2], *argv[3:], "--help"], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path):
    """systemd's own parser: unknown keys, bad values, a missing executable. ExecStart= is pointed at
    this checkout's relay (the unit's /opt/relay path does not exist here)."""
    text = (DEPLOY / "relay.service").read_text()
    installed = shlex.split(one("ExecStart"))[0]
    (tmp_path / "relay.service").write_text(text.replace(installed, RELAY))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "relay.service")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "info"},
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


CONTAINERFILE = (DEPLOY / "Containerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE)
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def test_the_containerfile_runs_relay_as_non_root_with_a_volume():
    assert all(base.startswith("python:3.11-slim") for base in instructions("FROM"))
    user = instructions("USER")[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert instructions("VOLUME") == ["/var/lib/relay"]
    assert instructions("STOPSIGNAL") == ["SIGTERM"]
    assert [json.loads(e) for e in instructions("ENTRYPOINT")] == [["relay"]]
    assert [json.loads(c) for c in instructions("CMD")] == [["run"]]
    assert any("pip install ." in run and "-e" not in run.split() for run in instructions("RUN"))


def healthcheck_argv() -> list[str]:
    (check,) = instructions("HEALTHCHECK")
    argv: list[str] = json.loads(check[check.index("CMD") + 3 :])
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2]
    return argv


async def test_the_healthcheck_passes_on_a_healthy_daemon_and_fails_otherwise(tmp_path):
    """The HEALTHCHECK's own command, run against a live daemon's /healthz and against nothing."""
    argv = [sys.executable, *healthcheck_argv()[1:]]

    async def check(url: str) -> int:
        env = {**os.environ, "RELAY_HEALTHCHECK_URL": url}
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        return await proc.wait()

    async with Harness(tmp_path) as h, h.app() as app:
        assert await check(f"{app.inbound_url}/healthz") == 0
        await app.store.close()  # the store stops answering: /healthz says 503
        assert await check(f"{app.inbound_url}/healthz") == 1
    assert await check(f"{app.inbound_url}/healthz") == 1  # nothing listening
