"""Masking of customers' personal data (email, phone, name, street address) in what the CLI prints.

`mask(data)` walks JSON-ready data and masks the values of personal fields by their key, wherever they
are (an order's payload, its shipping address, a history event): `j***@e***.com`, `+86 *** **** 5678`,
`J*** D***`. City, region and country stay: they are what an operator needs to see where a parcel goes.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL_KEYS = frozenset({"email", "customer_email"})
PHONE_KEYS = frozenset({"phone", "mobile", "telephone"})
NAME_KEYS = frozenset({"name", "first_name", "last_name", "company", "customer_name", "contact"})
ADDRESS_KEYS = frozenset({"line1", "line2", "address1", "address2", "street", "postal_code", "zip"})
ADDRESS_CONTAINERS = frozenset({"shipping_address", "billing_address", "address"})
"""Objects that hold an address: every personal field inside them is masked (`name` included)."""

_COUNTRY_CODE = re.compile(r"^\+(\d{1,3})(?=[\s().-])")


def mask_email(value: str) -> str:
    """`john.doe@example.com` -> `j***@e***.com`."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not local:
        return _initials(value)
    host, dot, tld = domain.rpartition(".")
    return f"{local[0]}***@{(host or tld)[:1]}***{dot}{tld if host else ''}"


def mask_phone(value: str) -> str:
    """`+86 138 1234 5678` -> `+86 *** **** 5678`: the country code (when written apart) and the last
    four digits stay."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return "***"
    match = _COUNTRY_CODE.match(value.strip())
    prefix = f"+{match.group(1)} " if match else ""
    return f"{prefix}*** **** {digits[-4:]}"


def _initials(value: str) -> str:
    """`Jane Doe` -> `J*** D***`; every word keeps its first character."""
    return " ".join(f"{word[0]}***" for word in value.split()) or ""


def mask_value(key: str, value: str) -> str:
    """One personal field masked by what its key says it is."""
    if not value:
        return value
    if key in EMAIL_KEYS:
        return mask_email(value)
    if key in PHONE_KEYS:
        return mask_phone(value)
    return _initials(value)


def mask(data: Any, *, _in_address: bool = False) -> Any:
    """`data` (JSON-ready: dicts, lists, scalars) with every personal field masked; a new object."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            personal = key in EMAIL_KEYS or key in PHONE_KEYS or key in ADDRESS_KEYS
            personal = personal or (key in NAME_KEYS and (_in_address or key != "name"))
            if personal and isinstance(value, str):
                out[key] = mask_value(key, value)
            else:
                out[key] = mask(value, _in_address=key in ADDRESS_CONTAINERS)
        return out
    if isinstance(data, list | tuple):
        return [mask(item, _in_address=_in_address) for item in data]
    return data
