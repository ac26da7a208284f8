"""`relay factories list | enable | disable`: the disabled state lives in the database, with reason and time."""

from __future__ import annotations

from relay.cli import EX_FAILURE, main

CONFIG = """
[daemon]
database = "sqlite:///{db}"
[storefronts.shop]
adapter = "demo"
url = "https://shop.example"
token = "t"
[factories.acme]
adapter = "webhook"
url = "https://acme.example/orders"
signing_secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
callback_secrets = ["c"]
[factories.bolt]
adapter = "webhook"
url = "https://bolt.example/orders"
signing_secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
callback_secrets = ["c"]
"""


def test_disable_list_enable_round_trip(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=tmp_path / "relay.db"))
    relay = ["-c", str(path), "factories"]

    assert main([*relay, "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["acme", "enabled"], ["bolt", "enabled"]]

    assert main([*relay, "disable", "acme", "--reason", "moving warehouse"]) == 0
    assert "disabled" in capsys.readouterr().out
    assert main([*relay, "disable", "acme"]) == 0
    assert "already disabled" in capsys.readouterr().out
    assert main([*relay, "list"]) == 0
    acme, bolt = capsys.readouterr().out.splitlines()
    assert "disabled since" in acme and "moving warehouse" in acme  # the first reason is kept
    assert "enabled" in bolt

    assert main([*relay, "enable", "acme"]) == 0
    assert "enabled" in capsys.readouterr().out
    assert main([*relay, "enable", "acme"]) == 0
    assert "was not disabled" in capsys.readouterr().out
    assert main([*relay, "list"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["acme", "enabled"]


def test_enabling_an_unknown_factory_fails_and_names_the_configured_ones(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(CONFIG.format(db=tmp_path / "relay.db"))
    assert main(["-c", str(path), "factories", "enable", "acmee"]) == EX_FAILURE
    assert "configured: acme, bolt" in capsys.readouterr().err
