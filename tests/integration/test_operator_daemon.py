"""Issue 12: operator actions take effect in a running daemon (state lives in the store), and the history a
timeline is drawn from has every attempt with its status and the remote end's answer."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

from adapters.webhook.fake import Fault
from relay.domain.models import factory_order_key
from relay.outbound.retries import ATTEMPTS
from relay.store import OrderView, Store, open_store
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine


async def until(condition: Callable[[], object], what: str, *, limit_s: float = 20.0) -> None:
    """Wait for `condition` (checked every 20 ms; it may return an awaitable); fail naming `what` if it
    never holds."""
    for _ in range(int(limit_s / 0.02)):
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def view(store: Store, order_id: int) -> OrderView:
    found = await store.find_order(order_id)
    assert found is not None
    return found


async def test_hold_release_and_cancel_act_on_a_running_daemon(tmp_path) -> None:
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")], paid=False)  # routing holds it: unpaid
        key = factory_order_key("shop", oid, "acme")
        async with h.app() as app:
            # An operator's action in another process reaches a SQLite daemon on its loops' idle timers
            # (5 s); shortened here so the test does not wait for them.
            for loop in (app.router, app.forwarder, app.shipper):
                loop.interval = 0.2
            runner = asyncio.create_task(app.run())
            operator = open_store(h.database)  # what the CLI opens: another connection, same database
            await operator.open()
            try:

                async def state() -> tuple[str, str | None]:
                    v = await view(operator, 1) if await operator.resolve_order("1") else None
                    return (v.order.state, v.order.attention_reason) if v else ("", None)

                async def is_state(*wanted: str) -> bool:
                    return (await state())[0] in wanted

                await until(lambda: is_state("held"), "the unpaid order to be held by routing")
                assert await operator.hold_order(1, "fraud check", 1.0) == [
                    "order 1 held: nothing is sent until `relay release 1`"
                ]
                h.storefront.mark_paid(oid)  # paid now: a routing hold would be lifted, a person's is not

                async def paid_version_stored() -> bool:
                    return (await view(operator, 1)).order.payload.paid

                await until(paid_version_stored, "the paid version to be polled")
                assert await state() == ("held", "operator_hold")
                assert acme.deliveries == {}
                polled = {s.name: s for s in (await operator.status(0.0)).storefronts}["shop"]
                assert polled.last_poll_ok_at is not None and not polled.failing

                assert await operator.release_order(1, 2.0) == [
                    "order 1 released (operator_hold): back to routing"
                ]
                await until(lambda: is_state("placed"), "the released order to be placed")
                assert acme.held == 1

                assert await operator.cancel_order(1, 3.0) == ["order.cancelled queued for acme"]
                await until(lambda: acme.cancellations[key] == 1, "the factory to receive order.cancelled")
                await until(lambda: is_state("cancelled"), "the factory's confirmation to cancel the order")
                history = await view(operator, 1)
            finally:
                await operator.close()
            app.stop()
            await runner
    assert acme.deliveries == {key: 1, f"{key}.cancel": 1}  # released once: placed once, cancelled once
    assert acme.is_cancelled(key)
    kinds = [(e.kind, e.detail.get("actor")) for e in history.events]
    for step in (
        ("held", "operator"),
        ("released", "operator"),
        ("cancel_requested", "operator"),
        ("cancel_queued", None),
        ("factory_accepted", None),
        ("factory_cancelled", None),
    ):
        assert step in kinds, step
    assert kinds.index(("released", "operator")) < kinds.index(("factory_accepted", None))


async def test_the_history_has_every_attempt_with_its_status_and_answer_and_the_circuit_is_recorded(
    tmp_path,
) -> None:
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme = h.factories["acme"]
        acme.fail_next(Fault(status=503, retry_after=7, body='{"error": "busy", "token": "sekrit-123"}'))
        async with h.app(clock=clock) as app:
            await app.run_once()
            failing = {f.name: f for f in (await app.store.status(clock.now)).factories}["acme"]
            assert failing.failing_since == clock.now
            assert failing.next_probe_at is not None and failing.next_probe_at >= clock.now + 7
            assert failing.last_error and "503" in failing.last_error
            clock.advance(7.5)
            await app.run_once()
            recovered = {f.name: f for f in (await app.store.status(clock.now)).factories}["acme"]
            assert (recovered.failing_since, recovered.next_probe_at, recovered.last_error) == (
                None,
                None,
                None,
            )
            assert await acme.ship_all() == 1
            await app.run_once()
            history = await view(app.store, 1)
    attempts = [e for e in history.events if e.kind in ("delivery_failed", "factory_accepted")]
    assert [(e.kind, e.detail.get("attempt"), e.detail.get("status")) for e in attempts] == [
        ("delivery_failed", 1, 503),
        ("factory_accepted", 2, None),
    ]
    answer = attempts[0].detail["response"]
    assert "busy" in answer and "sekrit-123" not in answer and len(answer) <= 500
    kinds = [e.kind for e in history.events]
    assert kinds[:2] == ["received", "routed"]
    assert kinds.index("shipment_received") < kinds.index("tracking_pushed")
    assert all(isinstance(e.at, float) for e in history.events)


async def test_each_poll_pass_records_its_outcome_for_status(tmp_path) -> None:
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        h.storefront.fail_next(503, times=ATTEMPTS)  # the first try and every in-call retry
        async with h.app(clock=clock) as app:
            await app.run_once()
            shop = {s.name: s for s in (await app.store.status(clock.now)).storefronts}["shop"]
            assert shop.failing and shop.last_poll_ok_at is None
            assert shop.last_poll_error_at == clock.now and "503" in (shop.last_error or "")
            clock.advance(1)
            await app.run_once()
            shop = {s.name: s for s in (await app.store.status(clock.now)).storefronts}["shop"]
    assert not shop.failing and shop.last_poll_ok_at == clock.now
    assert shop.cursor is not None
