"""pytest plugin (registered through `pytest11`): fixtures for adapter tests.

* `recording_sleep`: a `RecordingSleep` to inject as `AdapterContext.sleep`; returns at once and keeps
  the requested durations in `.calls`, so backoff and Retry-After can be asserted without waiting.
* `adapter_context`: an `AdapterContext` with that sleep and real aiohttp sessions (loopback, plain
  http, short timeout) whose sessions are tracked and closed at teardown.

The shared contract suites themselves are `relay.testing.contract.get_storefront_test_class` and
`get_factory_test_class`; an adapter's fake is found with `relay.registry.Registry().fake(name)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

pytest.register_assert_rewrite("relay.testing.contract")  # detailed failures in the shared checks

from relay.contracts import AdapterContext  # noqa: E402 (after the rewrite hook, by design)
from relay.testing.contract import (  # noqa: E402
    RecordingSleep,
    SessionTracker,
    loopback_egress,
    make_context,
)


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    """An instant `sleep` that records what it was asked to wait."""
    return RecordingSleep()


@pytest.fixture
async def adapter_context(recording_sleep: RecordingSleep) -> AsyncIterator[AdapterContext]:
    """An `AdapterContext` for talking to an in-process fake; leaked sessions are closed afterwards."""
    sessions = SessionTracker(loopback_egress())
    yield make_context(recording_sleep, sessions)
    await sessions.aclose()
