"""Polled factory adapter: orders go out as signed webhooks, shipments are fetched from a status endpoint."""

from adapters.factory_poll.adapter import PolledFactory

__all__ = ["PolledFactory"]
