"""The printed table and the PNG chart for one bench result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXCHANGES = {
    "demo": 3,
    "woocommerce": 4,
    "shopify": 3,
}
"""HTTP exchanges each path needs per order (one factory order, one parcel), besides its share of a
listing page: the factory POST, the factory's shipment callback, and the storefront writes. Demo: one
fulfilment POST. Shopify: one `fulfillmentCreate`, which also closes the fulfillment order (the order is
fulfilled by it). WooCommerce: the tracking (note or Shipment Tracking item) POST and the status PUT
that completes the order: no WooCommerce endpoint does both, so two writes are the floor. Looks before
writing (only needed after an attempt whose outcome is unknown) are not part of the ideal."""


def exchanges_per_order(storefront: str, page_size: int) -> float:
    return EXCHANGES[storefront] + 1 / page_size


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _q(percentiles: dict[Any, Any], q: int) -> Any:
    """A percentile by its number: int keys in a run, string keys in a JSON file read back."""
    return percentiles.get(q, percentiles.get(str(q)))


def table(result: dict[str, Any]) -> str:
    args = result["args"]
    out = []
    lim = result.get("limits")
    raw = None
    if lim:
        raw = lim["post_c"]["per_s"]
        out.append(f"limits (this machine, loopback, {result['machine']['cpus']} CPUs)")
        out.append(
            f"  raw aiohttp POST {lim['body_bytes']} B, separate server process: "
            f"{lim['post_1']['per_s']:.0f}/s at 1 in flight (p50 {lim['post_1']['p50_ms']:.2f} ms), "
            f"{raw:.0f}/s at {lim['post_c']['inflight']} in flight"
        )
        out.append(
            f"  SQLite WAL+FULL, 1 row per commit: {lim['sqlite3']['per_s']:.0f} commits/s sqlite3, "
            f"{lim['aiosqlite']['per_s']:.0f} commits/s aiosqlite"
        )
    out.append(
        f"relay: {args['orders']} orders at once (throughput; woocommerce, shopify: "
        f"{min(args['orders'], args.get('real_orders', args['orders']))}), then a latency phase at {args['rate']:g}/s "
        f"(demo) / {args['real_rate']:g}/s (woocommerce, shopify); {args['concurrency']} deliveries in "
        f"flight per factory; event loop {_loops(result)}; log level {args['log_level']}"
    )
    head = (
        f"  {'stored':>7} {'orders/s':>8} {'%ideal':>6} | {'added ms p50/p95/p99':>20} "
        f"{'(rate)':>7} | {'sat. p99':>8} | {'CPU ms/o':>8} {'stmts/o':>7} {'commits/o':>9} "
        f"{'reads/o':>7} {'sf req/o':>8} {'peak RSS':>8}"
    )
    for run in result["runs"]:
        ideal = run["ideal_orders_per_s"]
        out.append(
            f"{run['storefront']} path: {run['exchanges_per_order']:.2f} HTTP exchanges per order"
            + (f" -> ideal {ideal:.0f} orders/s (raw POST/s ÷ exchanges)" if ideal else "")
        )
        out.append(head)
        out.append("  " + "-" * (len(head) - 2))
        for s in run["settings"]:
            t, lat = s["throughput"], s["latency"]
            fraction = t.get("ideal_fraction")
            pct = f"{fraction * 100:.0f}%" if fraction else "-"
            lp = lat["added_latency_ms"] if lat else {}
            lat_s = "/".join(_ms(_q(lp, q)) for q in (50, 95, 99)) if lat else "-"
            rate = f"{lat['orders_per_s']:.0f}/s" if lat else "-"
            out.append(
                f"  {s['setting']:>7} {t['orders_per_s']:>8.0f} {pct:>6} | {lat_s:>20} "
                f"{rate:>7} | {_ms(_q(t['added_latency_ms'], 99)):>8} | {t['cpu_ms_per_order']:>8.2f} "
                f"{_f(t['statements_per_order']):>7} {t['commits_per_order']:>9.2f} "
                f"{_f(t.get('reads_per_order'), 2):>7} "
                f"{t['storefront_requests_per_order']:>8.2f} {s['peak_rss_mib']:>7.1f}M"
            )
        fakes = [s["throughput"].get("fakes_cpu_ms_per_order") for s in run["settings"]]
        if all(f is not None for f in fakes):
            out.append(
                "  CPU ms per order of the storefront and factory fakes (throughput; same cores): "
                + ", ".join(f"{s['setting']} {f:.2f}" for s, f in zip(run["settings"], fakes, strict=True))
            )
        threads = run["settings"][0]["throughput"].get("cpu_ms_per_order_by_thread") or {}
        if threads:
            out.append(
                "  relay CPU ms per order by thread (fresh, throughput): "
                + ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.005
                )
            )
        routes = run["settings"][0]["throughput"]["storefront_requests_by_route"]
        done = max(run["settings"][0]["throughput"]["completed"], 1)
        out.append(
            "  storefront requests per order (fresh, throughput): "
            + ", ".join(f"{k} {v / done:.2f}" for k, v in sorted(routes.items(), key=lambda kv: -kv[1]))
        )
        operations = run["settings"][0]["throughput"].get("storefront_operations")
        if operations:
            out.append(
                "  GraphQL operations per order: "
                + ", ".join(
                    f"{k} {v / done:.2f}" for k, v in sorted(operations.items(), key=lambda kv: -kv[1])
                )
            )
        rss = {s["stored_orders"]: s["peak_rss_mib"] for s in run["settings"]}
        scaled = sorted(k for k in rss if k)
        if len(scaled) >= 2:
            lo, hi = scaled[0], scaled[-1]
            out.append(
                f"  peak RSS {_n(lo)} -> {_n(hi)} stored orders: {(rss[hi] / rss[lo] - 1) * 100:+.1f}% "
                "(goal < +10%)"
            )
    if args.get("database"):
        out.append(
            "pg xN: N relay daemons, all active, on a fresh PostgreSQL schema; CPU ms, commits (write "
            "transactions), reads (READ ONLY transactions) and peak RSS summed over the N processes; "
            "statements not counted"
        )
    ok = all(
        s["throughput"]["exactly_once"] and (s["latency"] is None or s["latency"]["exactly_once"])
        for run in result["runs"]
        for s in run["settings"]
    )
    out.append(f"exactly-once checks: {'all held' if ok else 'FAILED'}; total {result['total_s']:.0f} s")
    return "\n".join(out)


def _loops(result: dict[str, Any]) -> str:
    """The relay's event loop as the runs reported it (`[daemon] event_loop`)."""
    used = sorted({str(s.get("event_loop")) for run in result["runs"] for s in run["settings"]})
    return f"{','.join(used)} (setting {result['args']['event_loop']})"


def _n(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def chart(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = result["runs"]
    run = next((r for r in runs if r["storefront"] == "demo"), runs[0])
    settings = run["settings"]
    names = [s["setting"] for s in settings]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    ax1.bar(names, [s["throughput"]["orders_per_s"] for s in settings], color="#4477aa")
    ideal = run["ideal_orders_per_s"]
    if ideal:
        ax1.axhline(ideal, color="#aa3377", linestyle="--", label=f"ideal from raw POST ({ideal:.0f})")
        ax1.axhline(ideal / 2, color="#ccbb44", linestyle=":", label="goal: 50% of ideal")
        ax1.legend(fontsize=8)
    ax1.set_title(f"{run['storefront']} path: throughput (orders/s, end to end)")
    ax1.set_xlabel("finished orders already stored")
    for q, color in ((50, "#66ccee"), (95, "#228833"), (99, "#ee6677")):
        ax2.plot(
            names,
            [_q((s["latency"] or s["throughput"])["added_latency_ms"], q) for s in settings],
            marker="o",
            color=color,
            label=f"p{q}",
        )
    ax2.axhline(20, color="grey", linestyle=":", label="goal p99 < 20 ms")
    ax2.set_title(f"added latency at {result['args']['rate']:g} orders/s (ms)")
    ax2.set_xlabel("finished orders already stored")
    ax2.legend(fontsize=8)
    ax3.bar(names, [s["peak_rss_mib"] for s in settings], color="#bbbbbb", label="peak RSS MiB")
    ax3b = ax3.twinx()
    ax3b.plot(names, [s["throughput"]["cpu_ms_per_order"] for s in settings], marker="s", color="#aa3377")
    ax3.set_title("peak RSS (bars, MiB) and CPU ms / order (line)")
    ax3.set_xlabel("finished orders already stored")
    fig.suptitle(f"relay bench {result['when']} {result.get('label') or ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
