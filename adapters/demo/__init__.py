"""The built-in demo storefront: adapter (talks to it) and fake (is it)."""

from adapters.demo.adapter import DemoStorefront

__all__ = ["DemoStorefront"]
