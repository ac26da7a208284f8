"""Signed-webhook factory adapter."""

from adapters.webhook.adapter import WebhookFactory

__all__ = ["WebhookFactory"]
