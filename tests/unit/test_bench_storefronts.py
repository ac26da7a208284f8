"""The bench's storefront side (issue 15 part 4): the vendor fakes from the `relay.fakes` entry points,
stamped by the bench's subclasses, behind its control app. Checks that the stamps, the request counts by
route and the exactly-once figures still come through the fakes as they are today (a renamed fake method
would silently blank the bench's latency and throughput figures)."""

from __future__ import annotations

import aiohttp
import pytest

from bench.report import exchanges_per_order
from bench.run import parse_args
from bench.servers import StorefrontControl, vendor_storefront


def test_storefront_paths_are_repeatable_or_comma_separated() -> None:
    assert parse_args([]).storefront == ["demo", "woocommerce", "shopify"]
    assert parse_args(["--storefront", "woocommerce,shopify", "--storefront", "demo"]).storefront == [
        "woocommerce",
        "shopify",
        "demo",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--storefront", "magento"])
    assert exchanges_per_order("woocommerce", 100) == 4.01


async def test_woocommerce_listing_and_fulfilment_are_stamped_and_counted() -> None:
    fake = vendor_storefront("woocommerce", 10)
    await fake.start()
    runner, url = await StorefrontControl(fake).start()
    auth = {"Authorization": aiohttp.encode_basic_auth(fake.consumer_key, fake.consumer_secret)}
    api = f"{fake.url}/wp-json/wc/v3/orders"
    try:
        async with aiohttp.ClientSession() as http:
            seeded = await (await http.post(f"{url}/_bench/seed", json={"count": 3})).json()
            listed = await (await http.get(api, params={"per_page": "10"}, headers=auth)).json()
            order_id = str(listed[0]["id"])
            note = {"note": "Shipped via UPS\nTracking number: 1Z999", "customer_note": True}
            assert (await http.post(f"{api}/{order_id}/notes", json=note, headers=auth)).status == 201
            status = await (await http.get(f"{url}/_bench/status")).json()
            report = await (await http.get(f"{url}/_bench/report?first={seeded['first']}")).json()
    finally:
        await runner.cleanup()
        await fake.close()
    assert status == {"orders": 3, "fulfilled": 1, "pages": 1, "requests": 2, "operations": 0}
    served, fulfilled, fulfilments, tracking = report["orders"][order_id]
    assert served is not None and fulfilled is not None and (fulfilments, tracking) == (1, 1)
    assert all(row[0] is not None for row in report["orders"].values())  # all three listed
    assert report["requests"] == {"GET /wp-json/wc/v3/orders": 1, "POST /wp-json/wc/v3/orders/{id}/notes": 1}


async def test_shopify_listing_and_fulfilment_are_stamped_and_counted() -> None:
    fake = vendor_storefront("shopify", 5)
    await fake.start()
    runner, url = await StorefrontControl(fake).start()
    graphql = f"{fake.url}/admin/api/{fake.api_version}/graphql.json"
    headers = {"X-Shopify-Access-Token": fake.access_token}
    listing = "{ orders(first: 5) { nodes { id fulfillmentOrders(first: 5) { nodes { id } } } } }"
    create = (
        "mutation F($f: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) "
        "{ fulfillment { id } userErrors { message } } }"
    )
    try:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{url}/_bench/seed", json={"count": 2})
            answer = await (await http.post(graphql, json={"query": listing}, headers=headers)).json()
            order = answer["data"]["orders"]["nodes"][0]
            fulfillment_order = order["fulfillmentOrders"]["nodes"][0]["id"]
            variables = {
                "f": {
                    "lineItemsByFulfillmentOrder": [{"fulfillmentOrderId": fulfillment_order}],
                    "trackingInfo": {"company": "UPS", "number": "1Z1"},
                }
            }
            made = await (
                await http.post(graphql, json={"query": create, "variables": variables}, headers=headers)
            ).json()
            report = await (await http.get(f"{url}/_bench/report")).json()
    finally:
        await runner.cleanup()
        await fake.close()
    assert made["data"]["fulfillmentCreate"]["userErrors"] == []
    served, fulfilled, fulfilments, tracking = report["orders"][order["id"]]
    assert served is not None and fulfilled is not None and (fulfilments, tracking) == (1, 1)
    assert report["operations"] == {"orders": 1, "fulfillmentCreate": 1}
    assert report["requests"] == {f"POST /admin/api/{fake.api_version}/graphql.json": 2}
