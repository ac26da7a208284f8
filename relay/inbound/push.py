"""Factory push messages: `POST /v1/factories/{factory}/push`, for factory adapters that are
`relay.contracts.PushReceiver`s (1688's message push).

A push is only a wake-up call: the adapter verifies it (signature, shape) and answers at once; when it
says so, `on_push(factory)` runs that factory's shipment poller now, which reads the truth from the
platform. Nothing is recorded from a push, so repeats and pushes out of order change nothing but an
extra poll. Bodies above the inbound size limit get 413 before any adapter code runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from relay.contracts import PushReceiver, PushRequest
from relay.inbound.callbacks import Refused, problem, read_body


class FactoryPushes:
    """The handler for pushes to factories whose adapter receives them (`receivers`, by factory name)."""

    def __init__(
        self,
        receivers: Mapping[str, PushReceiver],
        *,
        max_body_bytes: int,
        log: Any,
        on_push: Callable[[str], None],
    ) -> None:
        self.receivers = receivers
        self.max_body_bytes = max_body_bytes
        self.log = log
        self.on_push = on_push

    async def factory_push(self, request: web.Request) -> web.Response:
        """Hand one push to its factory's adapter; answer what it says, wake the poller if it says so."""
        factory = request.match_info["factory"]
        receiver = self.receivers.get(factory)
        if receiver is None:
            return problem(404, "no push endpoint for this factory")
        log = self.log.bind(factory=factory)
        try:
            body = await read_body(request, self.max_body_bytes)
        except Refused as refused:
            log.warning("push_refused", status=refused.status, detail=refused.title)
            return refused.response
        push = PushRequest(query=dict(request.query), body=body, content_type=request.content_type)
        try:
            verdict = receiver.handle_push(push)
        except Exception:
            log.exception("push_handler_failed")
            return problem(500, "push not handled")
        if verdict.status >= 300:
            log.warning("push_refused", status=verdict.status, detail=verdict.detail)
            return problem(verdict.status, verdict.detail or "refused")
        log.info("push_received", wake=verdict.wake, detail=verdict.detail)
        if verdict.wake:
            self.on_push(factory)
        return web.json_response({"status": "accepted"}, status=verdict.status)
