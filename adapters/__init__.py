"""relay adapters: one folder per adapter, the same files in each.

`__init__.py` (exports the adapter class), `adapter.py`, `client.py`, `fake.py` (the vendor, emulated)
and `README.md`; the adapter is registered in `relay.storefronts` or `relay.factories` and its fake in
`relay.fakes`, under the same name. See docs/adr/0009-adapter-kit.md; tests/adapters/test_adapter_kit.py
enforces it.
"""
