"""The WooCommerce client reads numbers exactly, whichever parser takes the body (issue 15: orjson when no
number has more than 15 significant digits, `json.loads(parse_float=Decimal)` otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp import web

from adapters.woocommerce.adapter import _decimal
from adapters.woocommerce.client import WooCommerceClient, WooCommerceError, parse_json
from relay.config import EgressSettings
from relay.outbound.session import new_session

LOOPBACK = EgressSettings(allow_plain_http=True, allow_private_addresses=True)


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, dict[str, tuple[str, str]]]]:
    """A store root whose `/wp-json/wc/v3/orders/<id>` answers `bodies[id]` (text, charset) verbatim."""
    bodies: dict[str, tuple[str, str]] = {}

    async def order(request: web.Request) -> web.Response:
        text, charset = bodies[request.match_info["id"]]
        return web.Response(body=text.encode(charset), content_type="application/json", charset=charset)

    app = web.Application()
    app.router.add_get("/wp-json/wc/v3/orders/{id}", order)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", bodies
    finally:
        await runner.cleanup()


async def test_prices_are_exact_whichever_parser_reads_them(
    served: tuple[str, dict[str, tuple[str, str]]],
) -> None:
    root, bodies = served
    bodies["1"] = ('{"price": 14.99, "total": "29.98", "qty": 2}', "utf-8")
    bodies["2"] = ('{"price": 0.1000000000000000055511, "name": "Tasse"}', "utf-8")  # 22 digits
    bodies["3"] = ('{"price": 19.9, "name": "Ta\u00dfe"}', "latin-1")
    bodies["4"] = ('{"price": NaN}', "utf-8")  # orjson refuses it; the standard parser reads it
    bodies["5"] = ("<html>critical error</html>", "utf-8")
    async with new_session(LOOPBACK) as session:
        client = WooCommerceClient(session, root, "ck_x", "cs_x")
        first = (await client.get_order("1")).data
        long = (await client.get_order("2")).data
        latin = (await client.get_order("3")).data
        nan = (await client.get_order("4")).data
        with pytest.raises(WooCommerceError) as not_json:
            await client.get_order("5")
    assert _decimal(first["price"]) == Decimal("14.99") and str(_decimal(first["price"])) == "14.99"
    assert first["total"] == "29.98" and first["qty"] == 2
    assert long["price"] == Decimal("0.1000000000000000055511")  # a float would have made it 0.1
    assert latin == {"price": Decimal("19.9"), "name": "Ta\u00dfe"}
    assert nan["price"] != nan["price"]
    assert not_json.value.status == 200 and "critical error" in not_json.value.body


def test_long_digit_runs_anywhere_take_the_exact_parser() -> None:
    assert parse_json(b'{"price": 1234567.12345678}')["price"] == Decimal("1234567.12345678")
    assert isinstance(parse_json(b'{"phone": "0049301234567890", "price": 1.5}')["price"], Decimal)
    assert isinstance(parse_json(b'{"price": 12345678.012345}')["price"], float)  # 14 digits: exact
    with pytest.raises(ValueError):
        parse_json(b"{not json")
