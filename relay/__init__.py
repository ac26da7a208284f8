"""relay: a drop-shipping order relay daemon."""

__version__ = "0.1.0"
