"""The shared factory contract, run against the polled factory adapter and its fake (listing included)."""

from adapters.factory_poll import PolledFactory
from adapters.factory_poll.fake import FakePolledFactory
from relay.testing.contract import get_factory_test_class

TestPolledFactoryContract = get_factory_test_class(PolledFactory, FakePolledFactory)
