"""The order state machine (tests/unit/test_order_machine.py) with many more examples and longer runs.

Knob: RELAY_FAULT_EXAMPLES (default 150 examples of up to 60 steps).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from tests.fault.summary import env_int, record
from tests.unit.test_order_machine import OrderMachine

EXAMPLES = env_int("RELAY_FAULT_EXAMPLES", 150)
RAN = {"examples": 0, "steps": 0}


class HeavyOrderMachine(OrderMachine):
    def teardown(self) -> None:
        RAN["examples"] += 1
        RAN["steps"] += len(self.events_seen)
        super().teardown()


TestHeavyOrderMachine = HeavyOrderMachine.TestCase
TestHeavyOrderMachine.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_record_state_machine_runs():
    """Runs after the machine (file order) and reports how much it ran; the machine itself fails on
    any broken invariant."""
    record(
        "stateful: order machine (hypothesis)",
        runs=RAN["examples"],
        note=f"examples of <= 60 steps; {RAN['steps']} order events checked",
    )
