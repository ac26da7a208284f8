"""The command line itself (issue 12): --version, help everywhere, exit codes, one-line errors, read-only
commands that need no secrets and create nothing, output that is a table on a TTY and plain when piped."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import click

from relay.cli import EX_CONFIG, EX_NOINPUT, EX_TEMPFAIL, cli, main
from relay.cli.common import plain_table
from relay.domain.models import Order, OrderLine, OrderState
from relay.store import open_store
from tests.unit.schema_at import database_at
from tests.unit.tty import run_in_tty

RELAY = str(Path(sys.executable).with_name("relay"))

CONFIG = """
[daemon]
database = "sqlite:///{db}"
[inbound]
port = {port}
[storefronts.shop]
adapter = "demo"
url = "https://shop.example"
token = {{ env = "RELAY_TEST_UNSET_TOKEN" }}
[factories.acme]
adapter = "webhook"
url = "https://acme.example/orders"
signing_secret = {{ env = "RELAY_TEST_UNSET_SIGNING" }}
callback_secrets = [{{ file = "/nonexistent/relay-callback-secret" }}]
[routing.skus]
"TEE-RED-M" = "acme"
"""


def write_config(tmp_path: Path, db: Path, port: int = 0) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=db, port=port))
    return path


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command in the tree, with the words that reach it."""
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += walk(sub, (*path, name))
    return found


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"relay {importlib.metadata.version('relay')}"


def test_every_command_and_option_has_help(capsys):
    commands = walk(cli)
    names = {" ".join(path) for path, _ in commands}
    for expected in ("status", "orders", "show", "retry", "replay", "hold", "release", "cancel", "prune"):
        assert expected in names
    assert {"factories list", "factories enable", "factories disable", "run", "migrate", "demo"} <= names
    for path, command in commands:
        assert command.help and len(command.help) > 20, f"relay {' '.join(path)} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"relay {' '.join(path)} {param.opts} has no help"
            else:  # click arguments take no help text: the command's help names them
                assert param.human_readable_name.upper() in command.help, (path, param.name)
        assert main([*path, "--help"]) == 0
        assert "Usage: relay" in capsys.readouterr().out


def test_json_on_every_listing():
    listings = dict(walk(cli))
    for path in [("status",), ("orders",), ("show",), ("factories", "list"), ("prune",)]:
        assert "--json" in [opt for p in listings[path].params for opt in getattr(p, "opts", [])], path


def test_an_unknown_state_is_a_usage_error_naming_the_valid_states(tmp_path, capsys):
    assert main(["--database", str(tmp_path / "relay.db"), "orders", "--state", "sent"]) == 2
    err = capsys.readouterr().err
    assert "'sent' is not one of" in err
    for state in OrderState:
        assert state.value in err
    assert not (tmp_path / "relay.db").exists()


def test_read_only_commands_on_a_missing_database_exit_66_and_create_nothing(tmp_path, capsys):
    db = tmp_path / "var" / "relay.db"
    config = write_config(tmp_path, db)
    for command in (["status"], ["orders"], ["show", "1"], ["factories", "list"], ["prune", "--dry-run"]):
        assert main(["-c", str(config), *command]) == EX_NOINPUT, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not exist" in err and str(db) in err, err
    assert main(["--database", str(db), "status", "--json"]) == EX_NOINPUT
    assert list(tmp_path.iterdir()) == [config]  # no database, no directory, no -wal, no lock file


def test_status_with_every_secret_unset_works_on_an_existing_database(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RELAY_TEST_UNSET_TOKEN", raising=False)
    monkeypatch.delenv("RELAY_TEST_UNSET_SIGNING", raising=False)
    db = tmp_path / "relay.db"
    config = write_config(tmp_path, db)
    assert main(["-c", str(config), "check"]) == EX_CONFIG  # the full config does need them
    assert "RELAY_TEST_UNSET_TOKEN is not set" in capsys.readouterr().err
    assert main(["-c", str(config), "migrate"]) == 0
    capsys.readouterr()

    assert main(["-c", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "Orders per state" in out and "\x1b[" not in out and "┃" not in out  # piped: plain text
    counts = dict(
        line.split() for line in out.split("Orders per state\n")[1].split("\n\n")[0].splitlines()[1:]
    )
    assert counts == {state.value: "0" for state in OrderState}  # every state, zeros included

    assert main(["-c", str(config), "status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["orders_by_state"] == {state.value: 0 for state in OrderState}
    assert report["dead_letters"] == [] and report["attention"] == []


def test_read_only_commands_never_migrate_an_old_database(tmp_path, capsys):
    db = tmp_path / "relay.db"
    database_at(db, 1).commit()
    assert main(["--database", str(db), "status"]) == EX_CONFIG
    assert "relay migrate" in capsys.readouterr().err
    con = sqlite3.connect(db)
    assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
    con.close()


def test_run_with_a_missing_database_directory_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RELAY_TEST_UNSET_TOKEN", "token-value-1")
    monkeypatch.setenv("RELAY_TEST_UNSET_SIGNING", "signing-value-1")
    config = write_config(tmp_path, tmp_path / "missing" / "relay.db")
    config.write_text(
        config.read_text().replace('[{ file = "/nonexistent/relay-callback-secret" }]', '["c"]')
    )
    for command in (["run", "--once"], ["migrate"]):
        assert main(["-c", str(config), *command]) == EX_CONFIG
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"database directory {tmp_path / 'missing'} does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_run_on_a_port_in_use_is_one_line(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        config = write_config(tmp_path, tmp_path / "relay.db", port=taken.getsockname()[1])
        config.write_text(
            config.read_text().replace('[{ file = "/nonexistent/relay-callback-secret" }]', '["c"]')
        )
        env = {
            **os.environ,
            "RELAY_TEST_UNSET_TOKEN": "token-value-1",
            "RELAY_TEST_UNSET_SIGNING": "sig-value-1",
        }
        done = subprocess.run(
            [RELAY, "-c", str(config), "run", "--once"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        taken.close()
    assert done.returncode == EX_TEMPFAIL
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]  # JSON log lines aside
    assert len(lines) == 1 and "address already in use" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_order_is_one_line(tmp_path, capsys):
    db = tmp_path / "relay.db"
    assert main(["--database", str(db), "migrate"]) == 0
    capsys.readouterr()
    for command in (["show", "#1042"], ["show", "shop:nope"], ["release", "77"]):
        assert main(["--database", str(db), *command]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"no order matches {command[1]!r}" in err


def test_retry_needs_an_order_or_all_dead(tmp_path, capsys):
    assert main(["--database", str(tmp_path / "relay.db"), "retry"]) == 2
    assert "give either ORDER or --all-dead" in capsys.readouterr().err


def test_plain_tables_are_aligned_under_their_header():
    text = plain_table(["id", "state", "reason"], [["1", "held", "unknown_sku"], ["1042", "completed", "-"]])
    assert text.splitlines() == [
        "id    state      reason",
        "1     held       unknown_sku",
        "1042  completed  -",
    ]


def test_tables_are_rich_on_a_tty_and_plain_when_piped(tmp_path):
    db = tmp_path / "relay.db"
    assert main(["--database", str(db), "migrate"]) == 0
    piped = subprocess.run(
        [RELAY, "--database", str(db), "status"], capture_output=True, text=True, timeout=30, check=True
    )
    assert "┃" not in piped.stdout and "\x1b[" not in piped.stdout
    assert "state              orders" in piped.stdout
    code, shown = run_in_tty([RELAY, "--database", str(db), "status"])
    assert code == 0
    assert "┏" in shown and "Orders per state" in shown  # rich box tables on a terminal


def test_broken_pipe_when_the_reader_goes_away_is_quiet(tmp_path):
    """`relay orders | head -1` on a long listing: the reader takes the first line and goes away while
    relay still writes: no traceback, nothing on stderr, exit 141 like a process killed by SIGPIPE."""
    db = tmp_path / "relay.db"
    seed_orders(db, 3000)  # ~220 kB of listing: more than a pipe holds
    relay = subprocess.Popen(
        [RELAY, "--database", str(db), "orders", "--limit", "5000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert relay.stdout is not None and relay.stderr is not None
    first = relay.stdout.readline()  # what `head -1` does: read the first line, then exit
    relay.stdout.close()
    assert relay.wait(timeout=30) == 141
    assert relay.stderr.read() == b""
    relay.stderr.close()
    assert first.split() == [b"id", b"order", b"number", b"state", b"reason", b"detail", b"updated"]


def seed_orders(db: Path, count: int) -> None:
    """`count` received orders in a fresh database, through the store (one ingest)."""

    async def seed() -> None:
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await store.migrate()
            when = datetime.now(UTC)
            orders = [
                Order(
                    external_id=str(n),
                    number=f"#{n}",
                    created_at=when,
                    updated_at=when,
                    currency="USD",
                    lines=(OrderLine(line_id=f"{n}-1", sku="TEE-RED-M", quantity=1, unit_price=Decimal(1)),),
                )
                for n in range(1, count + 1)
            ]
            await store.ingest("shop", orders, [], None, when.timestamp())
        finally:
            await store.close()

    asyncio.run(seed())
