"""WooCommerce storefront adapter (REST API v3; tracking by order note or the Shipment Tracking extension)."""

from adapters.woocommerce.adapter import WooCommerceStorefront

__all__ = ["WooCommerceStorefront"]
