"""The shared factory contract, run against the webhook adapter and its fake."""

from adapters.webhook import WebhookFactory
from adapters.webhook.fake import FakeFactory
from relay.testing.contract import get_factory_test_class

TestWebhookFactoryContract = get_factory_test_class(WebhookFactory, FakeFactory)
