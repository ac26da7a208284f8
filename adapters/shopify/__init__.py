"""Shopify storefront adapter (Admin GraphQL API). Entry point: `relay.storefronts` -> `shopify`."""

from adapters.shopify.adapter import ShopifyStorefront

__all__ = ["ShopifyStorefront"]
