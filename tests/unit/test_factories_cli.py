"""`relay factories list | enable | disable`: the disabled state lives in the database, with reason and time."""

from __future__ import annotations

import json

from relay.cli import EX_CONFIG, EX_FAILURE, EX_NOINPUT, main
from tests.unit.cli_config import CONFIG


def test_disable_list_enable_round_trip(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=tmp_path / "relay.db"))
    relay = ["-c", str(path), "factories"]
    assert main(["-c", str(path), "migrate"]) == 0
    capsys.readouterr()

    assert main([*relay, "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:2] == ["factory", "state"]
    assert [line.split()[:2] for line in rows] == [["acme", "enabled"], ["bolt", "enabled"]]

    assert main([*relay, "disable", "acme", "--reason", "moving warehouse"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main([*relay, "disable", "acme"]) == 0
    assert "already disabled" in capsys.readouterr().out
    assert main([*relay, "list", "--json"]) == 0
    acme, bolt = json.loads(capsys.readouterr().out)
    assert acme["enabled"] is False and acme["disabled_reason"] == "moving warehouse"  # the first is kept
    assert acme["disabled_at"] and bolt["enabled"] is True
    assert main([*relay, "list"]) == 0
    _, acme_line, bolt_line = capsys.readouterr().out.splitlines()
    assert "disabled" in acme_line and "moving warehouse" in acme_line
    assert "enabled" in bolt_line

    assert main([*relay, "enable", "acme"]) == 0
    assert "enabled" in capsys.readouterr().out
    assert main([*relay, "enable", "acme"]) == 0
    assert "was not disabled" in capsys.readouterr().out
    assert main([*relay, "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["acme", "enabled"]


def test_enabling_an_unknown_factory_fails_and_names_the_configured_ones(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=tmp_path / "relay.db"))
    assert main(["-c", str(path), "factories", "enable", "acmee"]) == EX_FAILURE
    assert "configured: acme, bolt" in capsys.readouterr().err


def test_factory_commands_need_no_secrets_and_never_create_the_database(tmp_path, capsys, monkeypatch):
    """The operator commands read only [daemon] and the table names: a secret given as an unset
    environment variable does not stop them, and a missing database is refused, not created."""
    path = tmp_path / "relay.toml"
    config = CONFIG.format(db=tmp_path / "relay.db").replace(
        'token = "t"', 'token = { env = "RELAY_UNSET_T" }'
    )
    path.write_text(config)
    monkeypatch.delenv("RELAY_UNSET_T", raising=False)
    assert main(["-c", str(path), "factories", "disable", "acme"]) == EX_NOINPUT
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "relay.db").exists()
    assert main(["-c", str(path), "migrate"]) == 0
    assert main(["-c", str(path), "factories", "disable", "acme"]) == 0
    assert main(["-c", str(path), "check"]) == EX_CONFIG  # `check` does resolve every secret
    assert "RELAY_UNSET_T is not set" in capsys.readouterr().err
