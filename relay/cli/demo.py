"""`relay demo`: the whole loop on loopback, against built-in fake storefront and factories."""

from __future__ import annotations

import argparse
import asyncio

from relay import logging as relay_logging
from relay.cli.common import Invocation
from relay.demo import run_demo


def configure(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the whole loop against built-in fake storefront and factories")
    demo.add_argument("--orders", type=int, default=50)
    demo.add_argument("--storefront", default="demo", help="demo, shopify or woocommerce")
    demo.add_argument(
        "--factory",
        default="webhook",
        help="adapter of the second factory: webhook, factory_poll or alibaba1688",
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    demo.add_argument("--database", default=None, help="SQLite file (default: a fresh temporary one)")
    demo.set_defaults(func=demo_command)


def demo_command(inv: Invocation) -> int:
    relay_logging.configure("json", "warning")
    args = inv.args
    return asyncio.run(
        run_demo(
            args.orders,
            storefront=args.storefront,
            factory=args.factory,
            give_up_after_s=args.timeout,
            database=args.database,
            registry=inv.registry,
        )
    )
