"""The read-only status page (`[admin] status_page = true`, on the admin listener, loopback only).

`GET /status` is one static HTML document: no external asset, no CDN, its style and script inline and
pinned by hash in the Content-Security-Policy. The script fetches `GET /status.json` every few seconds
and updates the page in place: the `relay status` view (`Store.status`), a chart of factory orders placed
and tracking pushed per minute (inline SVG), the latest dead letters and the orders needing a person.
Shop data reaches the page only as JSON and is written into the DOM as text (`textContent`), never as
markup; the server also masks e-mail addresses and phone numbers and scrubs secrets in free text
(errors, details) before it leaves the process.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from relay.exceptions import StoreUnavailable, scrub
from relay.store import Store

REFRESH_S = 5
"""How often the page fetches `/status.json`."""
CHART_HOURS = 3
"""The chart's window."""
LIST_LIMIT = 50
"""Dead letters and orders needing a person shown (the newest)."""

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+(])[+(]?\d[\d ().-]{5,}\d(?![\w])")


def mask_pii(text: str | None) -> str | None:
    """`text` with e-mail addresses and phone-like numbers masked and secrets scrubbed (None stays None)."""
    if text is None:
        return None
    masked = _EMAIL.sub("[email]", scrub(text))
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), masked)


def masked_status(report: dict[str, Any]) -> dict[str, Any]:
    """A `StatusReport.to_json()` with every free-text field passed through `mask_pii`."""
    out = dict(report)
    out["storefronts"] = [{**s, "last_error": mask_pii(s.get("last_error"))} for s in report["storefronts"]]
    out["factories"] = [
        {
            **f,
            "last_error": mask_pii(f.get("last_error")),
            "disabled_reason": mask_pii(f.get("disabled_reason")),
        }
        for f in report["factories"]
    ]
    out["attention"] = [{**a, "detail": mask_pii(a.get("detail"))} for a in report["attention"]]
    out["dead_letters"] = [{**d, "last_error": mask_pii(d.get("last_error"))} for d in report["dead_letters"]]
    return out


class StatusPage:
    """Handlers for `/status` (the page) and `/status.json` (its data)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time, log: Any = None) -> None:
        self.store = store
        self.clock = clock
        self.log = log or structlog.get_logger("relay").bind(component="admin")

    async def page(self, request: web.Request) -> web.Response:
        """The HTML document (static: the data comes from `/status.json`)."""
        return web.Response(text=PAGE, content_type="text/html", charset="utf-8", headers=_HEADERS)

    async def data(self, request: web.Request) -> web.Response:
        """The masked `StatusReport` as JSON; 503 `{"error": "store unavailable"}` when the store is not."""
        try:
            report = await self.store.status(self.clock(), hours=CHART_HOURS, limit=LIST_LIMIT)
        except StoreUnavailable as exc:
            self.log.debug("status_store_unavailable", error=str(exc))
            return web.json_response({"error": "store unavailable"}, status=503, headers=_NO_STORE)
        return web.json_response(masked_status(report.to_json()), headers=_NO_STORE)


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2433;background:#f7f8fa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40%}
th,td{border:1px solid #d8dce3;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#a1121f;font-weight:600}.ok{color:#11652f}.muted{color:#6b7280}
#error{display:none;background:#fde8e8;border:1px solid #a1121f;padding:.4em .8em;margin:.5em 0}
.grid{display:flex;flex-wrap:wrap;gap:1.5em}.grid>section{flex:1 1 22em}
svg text{font-size:11px;fill:#4b5563}
""".strip()

_SCRIPT = (
    """
"use strict";
const REFRESH_MS = %(refresh_ms)d, HOURS = %(hours)d;
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function ago(now, t) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, Math.round(now - t));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}
function age(s) {
  if (s === null || s === undefined) return "nothing owed";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function fill(id, header, rows, rowAttrs) {
  const table = document.getElementById(id);
  const body = el("tbody");
  const head = el("tr");
  for (const h of header) head.appendChild(el("th", {}, h));
  body.appendChild(head);
  rows.forEach((cells, i) => {
    const tr = el("tr", rowAttrs ? rowAttrs[i] : {});
    for (const c of cells) {
      const td = el("td", c && c.cls ? {class: c.cls} : {}, c && typeof c === "object" ? c.text : c);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
  if (!rows.length) {
    const tr = el("tr");
    tr.appendChild(el("td", {colspan: header.length, class: "muted"}, "none"));
    body.appendChild(tr);
  }
  table.replaceChildren(body);
}
function chart(data) {
  const svg = document.getElementById("chart");
  const W = 720, H = 200, L = 40, B = 24, T = 10;
  const end = Math.floor(data.now / 60) * 60;
  const minutes = HOURS * 60, start = end - (minutes - 1) * 60;
  const series = [["placed", data.placed_per_minute, "#2563eb"], ["pushed", data.pushed_per_minute, "#16a34a"]];
  let max = 1;
  const counts = series.map(([name, points, color]) => {
    const m = new Map(points.map(([t, n]) => [t, n]));
    const ys = [];
    for (let t = start; t <= end; t += 60) { const n = m.get(t) || 0; ys.push(n); if (n > max) max = n; }
    return [name, ys, color];
  });
  const nodes = [];
  const x = i => L + (i * (W - L - 10)) / (minutes - 1);
  const y = n => H - B - (n * (H - B - T)) / max;
  const axis = document.createElementNS(SVG, "path");
  axis.setAttribute("d", `M${L} ${T} V${H - B} H${W - 10}`);
  axis.setAttribute("stroke", "#9ca3af"); axis.setAttribute("fill", "none");
  nodes.push(axis);
  for (const [label, v] of [[String(max), T + 4], ["0", H - B]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", L - 6); t.setAttribute("y", v); t.setAttribute("text-anchor", "end");
    t.textContent = label; nodes.push(t);
  }
  for (const [label, px, anchor] of [["-" + HOURS + " h", L, "start"], ["now", W - 10, "end"]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", px); t.setAttribute("y", H - 6); t.setAttribute("text-anchor", anchor);
    t.textContent = label; nodes.push(t);
  }
  counts.forEach(([name, ys, color], k) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", ys.map((n, i) => `${x(i).toFixed(1)},${y(n).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("data-series", name);
    nodes.push(line);
    const legend = document.createElementNS(SVG, "text");
    legend.setAttribute("x", L + 10 + k * 220); legend.setAttribute("y", T + 12); legend.setAttribute("fill", color);
    legend.textContent = name === "placed" ? "factory orders placed / min" : "tracking pushed / min";
    nodes.push(legend);
  });
  svg.replaceChildren(...nodes);
}
function render(d) {
  document.getElementById("updated").textContent = "updated " + new Date(d.now * 1000).toLocaleTimeString();
  document.getElementById("oldest").textContent = age(d.oldest_pending_age_s);
  document.getElementById("quarantined").textContent = String(d.quarantined);
  fill("storefronts", ["storefront", "last successful poll", "state", "last error"], d.storefronts.map(s => [
    s.name, ago(d.now, s.last_poll_ok_at),
    s.failing ? {text: "failing", cls: "bad"} : {text: "ok", cls: "ok"}, s.last_error || ""]));
  fill("factories", ["factory", "circuit", "next probe", "last error"], d.factories.map(f => [
    f.name,
    f.disabled_at !== null ? {text: "disabled: " + (f.disabled_reason || ""), cls: "bad"}
      : f.failing_since !== null ? {text: "open since " + ago(d.now, f.failing_since), cls: "bad"}
      : {text: "closed", cls: "ok"},
    f.next_probe_at !== null ? ago(d.now, f.next_probe_at).replace(" ago", "") : "",
    f.last_error || ""]));
  fill("states", ["state", "orders"], Object.entries(d.orders_by_state).map(([k, v]) => [k, {text: v, cls: "n"}]));
  fill("dead", ["kind", "order", "number", "to", "attempts", "last error", "since"],
    d.dead_letters.map(x => [x.kind, x.order_id, x.number, x.destination, {text: x.attempts, cls: "n"},
      x.last_error || "", ago(d.now, x.since)]),
    d.dead_letters.map(x => ({"class": "dead-letter", "data-order-id": x.order_id})));
  fill("attention", ["order", "storefront", "number", "state", "reason", "detail", "since"],
    d.attention.map(a => [a.order_id, a.storefront, a.number, a.state, {text: a.reason, cls: "bad"},
      a.detail || "", ago(d.now, a.since)]),
    d.attention.map(a => ({"class": "attention", "data-order-id": a.order_id})));
  chart(d);
  document.body.setAttribute("data-loaded", "1");
}
async function refresh() {
  const banner = document.getElementById("error");
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    banner.style.display = "none";
  } catch (e) {
    banner.textContent = "cannot refresh: " + e.message;
    banner.style.display = "block";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
""".strip()
    % {"refresh_ms": REFRESH_S * 1000, "hours": CHART_HOURS}
)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>relay status</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style></head>
<body>
<h1>relay status</h1>
<div class="muted"><span id="updated">loading…</span> · refreshed every {REFRESH_S} s · oldest owed work:
<span id="oldest">…</span> · quarantined records: <span id="quarantined">…</span></div>
<noscript><p class="bad">This page needs JavaScript; <code>relay status</code> shows the same.</p></noscript>
<div id="error"></div>
<h2>Factory orders placed and tracking pushed per minute (last {CHART_HOURS} hours)</h2>
<svg id="chart" role="img" aria-label="orders placed and tracking pushed per minute" width="720" height="200" viewBox="0 0 720 200"></svg>
<div class="grid">
<section><h2>Storefronts</h2><table id="storefronts"></table></section>
<section><h2>Factories</h2><table id="factories"></table></section>
<section><h2>Orders per state</h2><table id="states"></table></section>
</div>
<h2>Dead letters (latest)</h2><table id="dead"></table>
<h2>Orders needing a person (latest)</h2><table id="attention"></table>
<script>{_SCRIPT}</script>
</body></html>
"""

_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; style-src {_csp_hash(_STYLE)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
