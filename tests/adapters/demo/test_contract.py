"""The shared storefront contract, run against the demo adapter and its fake."""

from adapters.demo import DemoStorefront
from adapters.demo.fake import FakeDemoStorefront
from relay.testing.contract import get_storefront_test_class

TestDemoStorefrontContract = get_storefront_test_class(DemoStorefront, FakeDemoStorefront)
