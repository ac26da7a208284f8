"""The inbound side: what factories and operators send to relay over HTTP."""

from relay.inbound.server import InboundServer

__all__ = ["InboundServer"]
