"""Test kit shipped with relay: fake servers, the adapter contract suite, helpers."""
