"""`relay check` and config validation: every problem named by its key, non-zero exit."""

from __future__ import annotations

import pytest

from relay.cli import EX_CONFIG, main
from relay.config import parse_settings
from relay.exceptions import ConfigurationError
from relay.registry import Registry

BROKEN = """
[storefronts.shop]
adapter = "magento"
[factories.acme]
adapter = "webhook"
url = "http://10.0.0.5/orders"
signing_secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
callback_secrets = [{ env = "RELAY_TEST_SURELY_UNSET" }]
[factories.bolt]
adapter = "webhook"
url = "not a url"
signing_secret = "s"
callback_secrets = ["c"]
[routing.skus]
"A" = "ghost"
"""


def test_check_names_each_offending_key_and_exits_non_zero(tmp_path, capsys):
    path = tmp_path / "relay.toml"
    path.write_text(BROKEN)
    assert main(["-c", str(path), "check"]) == EX_CONFIG
    err = capsys.readouterr().err
    assert "storefronts.shop.adapter: unknown adapter 'magento'; installed: demo" in err
    assert "factories.acme.callback_secrets.0: environment variable RELAY_TEST_SURELY_UNSET is not set" in err
    assert "factories.acme.url:" in err and "plain http" in err
    assert "factories.bolt.url:" in err
    assert 'routing.skus."A": unknown factory' in err


def test_check_accepts_the_example_config(monkeypatch, capsys):
    for name in ("MYSHOP_ACCESS_TOKEN", "ACME_SIGNING_SECRET", "ACME_CALLBACK_SECRET"):
        monkeypatch.setenv(name, "secret-value-123")
    assert main(["-c", "config/relay.example.toml", "check"]) == 0
    assert "ok" in capsys.readouterr().out


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    data = {
        "daemon": {"databse": "x", "shutdown_grace_s": -1},
        "storefronts": {
            "shop": {"adapter": "demo", "url": "https://shop.example", "token": "t", "colour": 1}
        },
        "factories": {
            "acme": {
                "adapter": "webhook",
                "url": "https://f.example",
                "signing_secret": "s",
                "callback_secrets": ["c"],
            }
        },
    }
    with pytest.raises(ConfigurationError) as info:
        parse_settings(data, Registry())
    keys = dict(info.value.problems)
    assert keys["daemon.databse"] == "unknown key"
    assert "daemon.shutdown_grace_s" in keys
    assert keys["storefronts.shop.colour"] == "unknown key"


def test_secrets_from_files_and_never_in_repr(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("file-secret-value\n")
    data = {
        "storefronts": {
            "shop": {"adapter": "demo", "url": "https://shop.example", "token": {"file": str(secret)}}
        },
        "factories": {
            "acme": {
                "adapter": "webhook",
                "url": "https://f.example",
                "signing_secret": "sig-secret",
                "callback_secrets": ["cb-secret"],
            }
        },
    }
    settings = parse_settings(data, Registry())
    assert settings.storefronts["shop"].options.token.get_secret_value() == "file-secret-value"
    text = repr(settings) + str(settings)
    for value in ("file-secret-value", "sig-secret", "cb-secret"):
        assert value not in text


def test_missing_config_file_is_a_config_error(tmp_path, capsys):
    assert main(["-c", str(tmp_path / "nope.toml"), "check"]) == EX_CONFIG
    assert "cannot read" in capsys.readouterr().err
