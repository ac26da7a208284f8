"""Delivering orders to a real (fake) factory over loopback: retry schedule, 410, circuit, restart, egress."""

from __future__ import annotations

from structlog.testing import capture_logs

from adapters.webhook.fake import Fault
from relay.config import EgressSettings
from relay.domain.models import factory_order_key
from relay.loops.outbox import run_until_idle
from relay.testing.harness import Harness, ManualClock
from relay.testing.vendor import SeedLine
from tests.integration.factory_helpers import events


def sent(fake) -> int:
    return sum(fake.deliveries.values())


async def test_503_three_times_then_200_places_one_order(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        oid = h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(Fault(status=503), Fault(status=503), Fault(status=503))
        async with h.app(clock=clock) as app:
            await app.run_once()
            # Standard Webhooks: after attempt n the next is due schedule[n] later (5 s, 5 min, 30 min) ±10 %.
            for expected_wait in (5, 300, 1800):
                fo = (await app.store.find_order(1)).factory_orders[0]
                assert fo.state == "pending"
                assert 0.9 * expected_wait <= fo.next_attempt_at - clock.now <= 1.1 * expected_wait
                clock.advance(0.85 * expected_wait)
                await app.run_once()  # not due yet: nothing leaves
                clock.advance(0.3 * expected_wait)
                await app.run_once()
            view = await app.store.find_order(1)
        key = factory_order_key("shop", oid, "acme")
        assert acme.deliveries == {key: 4}
        assert acme.held == 1
        assert (view.factory_orders[0].state, view.factory_orders[0].attempts) == ("placed", 4)
        assert events(view).count("delivery_failed") == 3


async def test_429_with_retry_after_is_not_retried_sooner(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(Fault(status=429, retry_after=7))
        async with h.app(clock=clock) as app:
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
            assert fo.next_attempt_at >= clock.now + 7
            clock.advance(6.9)
            await app.run_once()
            assert sent(acme) == 1
            clock.advance(0.2)
            await app.run_once()
        assert sent(acme) == 2 and acme.held == 1


async def test_301_is_a_failed_attempt_and_is_not_followed(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(Fault(status=301, headers={"Location": acme.url + "?followed=1"}))
        async with h.app() as app:
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
        assert sent(acme) == 1  # a followed redirect would have reached the factory again
        assert (fo.state, fo.attempts) == ("pending", 1)
        assert "redirect" in fo.last_error and "not followed" in fo.last_error


async def test_retries_exhausted_dead_letters_with_the_last_response_quoted(tmp_path):
    clock = ManualClock()
    config = {"factories": {"acme": {"retry": {"schedule_s": [0, 10, 10], "jitter": 0}}}}
    async with Harness(tmp_path, config=config) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(*(Fault(status=500, body=f'{{"error": "oven {n} broke"}}') for n in (1, 2, 3)))
        async with h.app(clock=clock) as app:
            for _ in range(3):
                await app.run_once()
                clock.advance(10)
            await app.run_once()
            view = await app.store.find_order(1)
        fo = view.factory_orders[0]
        assert (fo.state, fo.attempts, fo.dead_reason) == ("dead", 3, "retries_exhausted")
        assert "oven 3 broke" in fo.last_error
        assert (view.order.state, view.order.attention_reason) == ("failed", "retries_exhausted")
        assert sent(acme) == 3


async def test_410_disables_the_factory_until_enabled_then_each_order_is_placed_once(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        first = h.storefront.add_order([SeedLine("TEE-RED-M")])
        second = h.storefront.add_order([SeedLine("TEE-BLU-L")])
        acme.fail_next(Fault(status=410, body='{"error": "endpoint retired"}'), Fault(status=410))
        with capture_logs() as logs:
            async with h.app(clock=clock) as app:
                await app.run_once()  # both go out concurrently, both get 410
                [row] = [f for f in await app.store.list_factories() if f.name == "acme"]
                assert row.disabled_at == clock.now and "410" in row.disabled_reason
                third = h.storefront.add_order([SeedLine("TEE-RED-M")])
                clock.advance(3600)
                await app.run_once()  # disabled: nothing leaves, however long we wait
                assert sent(acme) == 2
                fos = [(await app.store.find_order(i)).factory_orders[0] for i in (1, 2, 3)]
                assert {(fo.state, fo.attempts) for fo in fos} == {("pending", 0)}

                assert await app.store.enable_factory("acme", clock.now)
                await app.run_once()
                states = [(await app.store.find_order(i)).order.state for i in (1, 2, 3)]
        assert [e for e in logs if e["event"] == "factory_disabled"] == [
            next(e for e in logs if e["event"] == "factory_disabled")
        ]
        assert states == ["placed"] * 3
        keys = [factory_order_key("shop", oid, "acme") for oid in (first, second, third)]
        assert acme.deliveries == {keys[0]: 2, keys[1]: 2, keys[2]: 1}
        assert acme.held == 3


async def test_circuit_logs_failing_and_recovered_once_and_probes_one_at_a_time(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        for _ in range(5):
            h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(*[Fault(status=503)] * 6)
        with capture_logs() as logs:
            async with h.app(clock=clock) as app:
                await app.run_once()
                assert sent(acme) == 5  # the circuit was closed: normal concurrency
                clock.advance(6)  # every order is due again
                await app.run_once()
                assert sent(acme) == 6  # open: one probe, which failed
                clock.advance(10)
                await app.run_once()
                assert sent(acme) == 6  # the failed probe's own retry time (5 min) is not reached
                clock.advance(400)
                await app.run_once()  # the probe succeeds, the circuit closes, the rest follow
                states = {(await app.store.find_order(i)).order.state for i in range(1, 6)}
        assert states == {"placed"}
        assert sent(acme) == 11 and acme.held == 5
        failing = [e for e in logs if e["event"] == "factory_failing"]
        recovered = [e for e in logs if e["event"] == "recovered" and e.get("factory") == "acme"]
        assert len(failing) == 1 and failing[0]["factory"] == "acme"
        assert len(recovered) == 1


async def test_a_restart_in_the_middle_of_the_schedule_resumes_it(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(Fault(status=503), Fault(status=503))
        async with h.app(clock=clock) as app:
            await app.run_once()
            clock.advance(6)
            await app.run_once()
            before = (await app.store.find_order(1)).factory_orders[0]
        assert before.attempts == 2 and before.next_attempt_at - clock.now >= 270
        async with h.app(clock=clock) as app:
            after = (await app.store.find_order(1)).factory_orders[0]
            assert (after.attempts, after.next_attempt_at) == (2, before.next_attempt_at)
            await app.run_once()
            assert sent(acme) == 2  # still not due after the restart
            clock.now = before.next_attempt_at
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
        assert (fo.state, fo.attempts) == ("placed", 3)
        assert sent(acme) == 3 and acme.held == 1


async def test_a_factory_url_resolving_to_loopback_is_refused_and_never_reached(tmp_path):
    async with Harness(tmp_path) as h:
        acme = h.factories["acme"]
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        port = acme.url.split(":")[2].split("/")[0]
        config = {"factories": {"acme": {"url": f"http://localhost:{port}/orders"}}}
        async with h.app(settings=h.settings(**config)) as app:  # private addresses allowed: poll and route
            await app.pollers[0].safe_pass()
            await app.router.safe_pass()
        settings = h.settings(**config)  # `relay check` would refuse this config: build it past the check
        strict = settings.model_copy(update={"egress": EgressSettings(allow_plain_http=True)})
        async with h.app(settings=strict) as app:
            await run_until_idle(app.forwarder)
            fo = (await app.store.find_order(1)).factory_orders[0]
        assert sent(acme) == 0
        assert (fo.state, fo.attempts) == ("pending", 1)  # may be a DNS or config fix away: retried
        assert "forbids" in fo.last_error


async def test_an_oversized_factory_answer_is_refused_and_retried(tmp_path):
    clock = ManualClock()
    async with Harness(tmp_path, config={"egress": {"max_response_bytes": 1024}}) as h:
        acme = h.factories["acme"]
        acme.clock = clock
        h.storefront.add_order([SeedLine("TEE-RED-M")])
        acme.fail_next(Fault(status=201, body='{"reference": "' + "x" * 5000 + '"}'))
        async with h.app(clock=clock) as app:
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
            assert (fo.state, fo.attempts) == ("pending", 1)
            assert "cap" in fo.last_error
            clock.advance(6)
            await app.run_once()
            fo = (await app.store.find_order(1)).factory_orders[0]
        assert fo.state == "placed" and acme.held == 1
