"""The adapter kit: every adapter folder has the same files, is registered with a fake, is documented
and owned, and the core reaches adapters only through entry points."""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from relay.contracts import FactoryAdapter, StorefrontAdapter
from relay.registry import FACTORIES, FAKES, STOREFRONTS, Registry
from relay.testing.vendor import FakeFactoryServer, FakeStorefront

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "adapters"
KIT_FILES = {"__init__.py", "adapter.py", "client.py", "fake.py", "README.md"}

FOLDERS = sorted(p.name for p in ADAPTERS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
ADAPTER_GROUPS = (STOREFRONTS, FACTORIES)
STOREFRONT_MEMBERS = ("Options", "is_sorted", "fetch_orders", "push_shipment", "aclose")
FACTORY_MEMBERS = ("Options", "submit", "cancel", "aclose")


def registered(group: str) -> dict[str, str]:
    """Entry point name -> the adapters/ folder its class lives in."""
    return {ep.name: ep.value.split(":")[0].split(".")[1] for ep in entry_points(group=group)}


def test_there_are_adapter_folders() -> None:
    assert {"demo", "shopify", "woocommerce", "webhook", "factory_poll"} <= set(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_adapter_folder_has_the_kit_files(folder: str) -> None:
    present = {p.name for p in (ADAPTERS / folder).iterdir() if p.is_file()}
    assert present >= KIT_FILES, f"adapters/{folder} lacks {sorted(KIT_FILES - present)}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_adapter_folder_is_registered(folder: str) -> None:
    folders = {f for group in ADAPTER_GROUPS for f in registered(group).values()}
    assert folder in folders, f"adapters/{folder} has no relay.storefronts or relay.factories entry point"


@pytest.mark.parametrize(
    ("group", "name"), [(group, name) for group in ADAPTER_GROUPS for name in sorted(registered(group))]
)
def test_every_registered_adapter_has_a_registered_fake(group: str, name: str) -> None:
    registry = Registry()
    assert name in registry.names(FAKES), f"{group} -> {name} has no relay.fakes entry point"
    adapter_cls, fake_cls = registry.load(group, name), registry.fake(name)
    assert registered(FAKES)[name] == registered(group)[name], "the fake lives in the adapter's folder"
    assert fake_cls.adapter == name, "a fake names the adapter that talks to it"
    protocol, members, fake_protocol = (
        (StorefrontAdapter, STOREFRONT_MEMBERS, FakeStorefront)
        if group == STOREFRONTS
        else (FactoryAdapter, FACTORY_MEMBERS, FakeFactoryServer)
    )
    missing = [m for m in members if not hasattr(adapter_cls, m)]
    assert not missing, f"{adapter_cls.__qualname__} lacks {missing} of {protocol.__name__}"
    assert isinstance(fake_cls(), fake_protocol)


@pytest.mark.parametrize(
    ("group", "name"), [(group, name) for group in ADAPTER_GROUPS for name in sorted(registered(group))]
)
def test_every_readme_documents_the_config_keys_and_the_fake(group: str, name: str) -> None:
    registry = Registry()
    readme = (ADAPTERS / registered(group)[name] / "README.md").read_text()
    options = registry.load(group, name).Options
    missing = [key for key in options.model_fields if not re.search(rf"\b{key}\b", readme)]
    assert not missing, f"adapters/{registered(group)[name]}/README.md does not document {missing}"
    assert registry.fake(name).__name__ in readme, "the README names its fake and describes its knobs"


def _imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append(node.module)
    return modules


def test_the_core_never_imports_adapters() -> None:
    """Adapters and their fakes are found through entry points (`relay.registry`), never imported."""
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "relay").rglob("*.py"))
        for module in _imported_modules(path)
        if module == "adapters" or module.startswith("adapters.")
    ]
    assert offenders == []


def test_hmac_signing_lives_once() -> None:
    """Only `relay.signing` computes HMACs; the webhook client, the fake factory and the inbound
    verifier all call it."""
    users = sorted(
        str(path.relative_to(ROOT))
        for tree in ("relay", "adapters")
        for path in (ROOT / tree).rglob("*.py")
        if "hmac" in _imported_modules(path)
    )
    assert users == ["relay/signing.py"]
    for path in ("adapters/webhook/client.py", "adapters/webhook/fake.py", "relay/inbound/callbacks.py"):
        assert "relay.signing" in _imported_modules(ROOT / path), path


def test_codeowners_maps_every_adapter_folder_and_the_core() -> None:
    rules = [
        line.split()
        for line in (ROOT / ".github" / "CODEOWNERS").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    owned = {rule[0]: rule[1:] for rule in rules}
    assert all(owners and all(o.startswith("@") for o in owners) for owners in owned.values())
    for folder in FOLDERS:
        assert f"/adapters/{folder}/" in owned, f"CODEOWNERS has no rule for adapters/{folder}"
    assert "/relay/" in owned
