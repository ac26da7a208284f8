"""The shared storefront contract, run against the Shopify adapter and its fake."""

from adapters.shopify import ShopifyStorefront
from adapters.shopify.fake import FakeShopify
from relay.testing.contract import get_storefront_test_class

TestShopifyContract = get_storefront_test_class(ShopifyStorefront, FakeShopify)
