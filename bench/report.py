"""The printed table and the PNG chart for one bench result."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ideal_ratio(page_size: int) -> float:
    """Orders/s per raw POST/s if HTTP were the only cost: 3 exchanges per order (factory POST, shipment
    callback, tracking push) plus its 1/page_size share of a poll page."""
    return 1 / (3 + 1 / page_size)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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
    ideal = ideal_ratio(args["page_size"])
    out.append(
        f"relay: {args['orders']} orders at once (throughput), {args['latency_orders']} at "
        f"{args['rate']:g}/s (latency); {args['concurrency']} deliveries in flight per factory; "
        f"uvloop={'on' if args['uvloop'] else 'off'}; log level {args['log_level']}"
    )
    if raw:
        out.append(
            f"  ideal ratio relay orders/s ÷ raw POST/s = 1/(3 + 1/{args['page_size']}) = {ideal:.3f} "
            f"-> ideal {raw * ideal:.0f} orders/s; goal >= 50% of it = {raw * ideal / 2:.0f} orders/s"
        )
    head = (
        f"  {'stored':>7} {'orders/s':>8} {'ratio':>6} {'%ideal':>6} | {'added ms p50/p95/p99':>20} "
        f"{'(rate)':>7} | {'sat. p99':>8} | {'CPU s/1k':>8} {'commits/o':>9} {'peak RSS':>8}"
    )
    out.append(head)
    out.append("  " + "-" * (len(head) - 2))
    for s in result["settings"]:
        t, lat = s["throughput"], s["latency"]
        ratio = t["orders_per_s"] / raw if raw else None
        pct = f"{ratio / ideal * 100:.0f}%" if ratio else "-"
        lp = lat["added_latency_ms"] if lat else {}
        lat_s = "/".join(_ms(lp.get(q)) for q in (50, 95, 99)) if lat else "-"
        rate = f"{lat['orders_per_s']:.0f}/s" if lat else "-"
        out.append(
            f"  {s['setting']:>7} {t['orders_per_s']:>8.0f} {ratio if ratio else 0:>6.3f} {pct:>6} | {lat_s:>20} "
            f"{rate:>7} | {_ms(t['added_latency_ms'][99]):>8} | {t['cpu_s_per_1000']:>8.2f} "
            f"{t['commits_per_order']:>9.2f} {s['peak_rss_mib']:>7.1f}M"
        )
    rss = {s["stored_orders"]: s["peak_rss_mib"] for s in result["settings"]}
    scaled = sorted(k for k in rss if k)
    if len(scaled) >= 2:
        lo, hi = scaled[0], scaled[-1]
        out.append(
            f"  peak RSS {_n(lo)} -> {_n(hi)} stored orders: {(rss[hi] / rss[lo] - 1) * 100:+.1f}% (goal < +10%)"
        )
    ok = all(
        s["throughput"]["exactly_once"] and (s["latency"] is None or s["latency"]["exactly_once"])
        for s in result["settings"]
    )
    out.append(f"  exactly-once checks: {'all held' if ok else 'FAILED'}; total {result['total_s']:.0f} s")
    return "\n".join(out)


def _n(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def chart(result: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    settings = result["settings"]
    names = [s["setting"] for s in settings]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2))
    ax1.bar(names, [s["throughput"]["orders_per_s"] for s in settings], color="#4477aa")
    lim = result.get("limits")
    if lim:
        from bench.report import ideal_ratio

        ideal = lim["post_c"]["per_s"] * ideal_ratio(result["args"]["page_size"])
        ax1.axhline(ideal, color="#aa3377", linestyle="--", label=f"ideal from raw POST ({ideal:.0f})")
        ax1.axhline(ideal / 2, color="#ccbb44", linestyle=":", label="goal: 50% of ideal")
        ax1.legend(fontsize=8)
    ax1.set_title("throughput (orders/s, end to end)")
    ax1.set_xlabel("finished orders already stored")
    for q, color in ((50, "#66ccee"), (95, "#228833"), (99, "#ee6677")):
        ax2.plot(
            names,
            [(s["latency"] or s["throughput"])["added_latency_ms"][q] for s in settings],
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
    ax3b.plot(names, [s["throughput"]["cpu_s_per_1000"] for s in settings], marker="s", color="#aa3377")
    ax3.set_title("peak RSS (bars, MiB) and CPU s / 1000 orders (line)")
    ax3.set_xlabel("finished orders already stored")
    fig.suptitle(f"relay bench {result['when']} {result.get('label') or ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
