"""Personal data masked in what the CLI prints, and credentials scrubbed from it."""

from __future__ import annotations

import asyncio
import json
import sqlite3

from relay.cli import main
from relay.cli.pii import mask, mask_email, mask_phone
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine


def test_emails_keep_their_first_letters_and_top_level_domain():
    assert mask_email("john.doe@example.com") == "j***@e***.com"
    assert mask_email("a@mail.example.co.uk") == "a***@m***.uk"
    assert mask_email("root@localhost") == "r***@l***"
    assert mask_email("not an email") == "n*** a*** e***"


def test_phones_keep_the_country_code_and_the_last_four_digits():
    assert mask_phone("+86 138 1234 5678") == "+86 *** **** 5678"
    assert mask_phone("+1-415-555-0199") == "+1 *** **** 0199"
    assert mask_phone("0755 8888 1234") == "*** **** 1234"
    assert mask_phone("12345") == "***"


def test_mask_walks_nested_data_by_key():
    data = {
        "name": "acme",  # a factory's name, not a person's
        "email": "jane@example.org",
        "shipping_address": {
            "name": "Jane Q Doe",
            "company": "Doe Trading",
            "line1": "12 High Street",
            "address1": "12 High Street",
            "postal_code": "518000",
            "city": "Shenzhen",
            "country_code": "CN",
            "phone": "+86 755 1234 5678",
        },
        "events": [{"kind": "changed", "changes": {"email": "new@example.org"}}],
    }
    masked = mask(data)
    assert masked["name"] == "acme"
    assert masked["email"] == "j***@e***.org"
    address = masked["shipping_address"]
    assert (address["name"], address["company"], address["line1"]) == (
        "J*** Q*** D***",
        "D*** T***",
        "1*** H*** S***",
    )
    assert (address["address1"], address["postal_code"]) == ("1*** H*** S***", "5***")
    assert (address["city"], address["country_code"]) == ("Shenzhen", "CN")
    assert address["phone"] == "+86 *** **** 5678"
    assert masked["events"][0]["changes"]["email"] == "n***@e***.org"
    assert data["email"] == "jane@example.org"  # a copy: the input is untouched


async def test_show_scrubs_credentials_whatever_the_database_holds(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        async with h.app() as app:
            await app.run_once()
    con = sqlite3.connect(tmp_path / "relay.db")  # as an older relay, which stored answers unscrubbed
    detail = {"error": "HTTP 502", "response": "retry https://user:pw@acme.example/o?token=s3cr3t-value"}
    con.execute(
        "INSERT INTO order_events (order_id, at, kind, detail) VALUES (1, 1.0, 'delivery_failed', ?)",
        (json.dumps(detail),),
    )
    con.commit()
    con.close()
    for extra in ([], ["--json"], ["--pii"]):
        assert await asyncio.to_thread(main, ["--database", h.database, "show", "1", *extra]) == 0
        out = capsys.readouterr().out
        assert "s3cr3t-value" not in out and "user:pw" not in out
        assert "https://[redacted]@acme.example/o?[redacted]" in out
