"""Command line: `relay run | migrate | check | demo | orders ... | stats | factories ... | prune`.

One module per command group; each has `configure(subparsers)`, which adds its commands with
`set_defaults(func=…)`. A command takes an `Invocation` and returns an exit code (see
`relay.cli.common`): 0 success, 1 failure, 2 usage, 70 a loop crashed, 75 database unavailable or,
for `run --once`, any component failed during the pass (a storefront or factory unreachable or refusing
credentials, the store unavailable; also when only one of several storefronts failed and the rest of
the pass went through: the failed ones are named on stderr), 78 configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from relay.cli import daemon, demo, factories, maintenance, orders
from relay.cli.common import EX_CONFIG, EX_FAILURE, EX_OK, EX_SOFTWARE, EX_TEMPFAIL, Invocation
from relay.exceptions import ConfigurationError, StoreUnavailable, UnsupportedDatabaseVersion, scrub

__all__ = ["EX_CONFIG", "EX_FAILURE", "EX_OK", "EX_SOFTWARE", "EX_TEMPFAIL", "build_parser", "main"]

DEFAULT_CONFIG = os.environ.get("RELAY_CONFIG", "config/relay.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="Drop-shipping order relay daemon.")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config (env RELAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (daemon, demo, orders, factories, maintenance):
        group.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every expected failure becomes a message on stderr and an exit code.
    Messages are scrubbed of credentials (`relay.exceptions.scrub`): a problem may quote a URL."""
    inv = Invocation(build_parser().parse_args(argv))
    try:
        code: int = inv.args.func(inv)
    except ConfigurationError as exc:
        print("configuration is invalid:", file=sys.stderr)
        for key, problem in exc.problems:
            print(f"  {scrub(key)}: {scrub(problem)}", file=sys.stderr)
        return EX_CONFIG
    except UnsupportedDatabaseVersion as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return EX_CONFIG
    except StoreUnavailable as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return EX_TEMPFAIL
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
