"""Issue 13, item 5: line item properties (engraving text, size notes, buyer remarks) reach the factory
verbatim in `order.created`, non-ASCII and whitespace included, and show in the order's view."""

from __future__ import annotations

import asyncio
import json

from relay.cli import main
from relay.domain.models import factory_order_key
from relay.testing.harness import Harness
from relay.testing.vendor import SeedLine

PROPERTIES = {
    "Engraving": "Für Zoë — 愛してる 🎉",
    "size note": "  left sleeve, 2 cm shorter\nsecond line  ",
    "买家留言": '请用礼盒包装 "gift" \\ <b>',
}


async def test_properties_reach_the_factory_byte_identical_and_show_in_the_order(tmp_path, capsys):
    async with Harness(tmp_path) as h:
        config = str(h.write_config(tmp_path / "relay.toml"))
        oid = h.storefront.add_order([SeedLine("MUG-WHT", 1, properties=PROPERTIES), SeedLine("CAP-BLK")])
        async with h.app() as app:
            await app.run_once()
            view = await app.store.find_order(1)
        key = factory_order_key("shop", oid, "bolt")
        body = h.factories["bolt"].bodies[key]  # the raw bytes the factory received and verified
        lines = {ln["sku"]: ln for ln in json.loads(body)["data"]["lines"]}
        sent = lines["MUG-WHT"]["properties"]
        assert sent == PROPERTIES
        assert [v.encode() for v in sent.values()] == [v.encode() for v in PROPERTIES.values()]
        assert lines["CAP-BLK"]["properties"] == {}
        # `relay show` prints the view: the lines carry the properties as the storefront gave them.
        shown = view.to_json()["order"]["payload"]["lines"]
        assert [ln["properties"] for ln in shown] == [PROPERTIES, {}]
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["-c", config, "show", "1"]) == 0
        out = capsys.readouterr().out
        assert "Engraving: Für Zoë — 愛してる 🎉" in out and '买家留言: 请用礼盒包装 "gift"' in out
