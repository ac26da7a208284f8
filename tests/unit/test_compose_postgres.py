"""deploy/compose.postgres.yml runs what README "Scaling out" says: PostgreSQL and three daemons of one image,
one config, distinct instance ids (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_file_runs_postgresql_and_three_daemons_of_one_config() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with the dev tools (pre-commit)
    compose = yaml.safe_load((ROOT / "deploy" / "compose.postgres.yml").read_text())
    services = compose["services"]
    daemons = {name: s for name, s in services.items() if name.startswith("relay-")}
    assert len(daemons) == 3
    assert {s["hostname"] for s in daemons.values()} == set(daemons)  # instance_id defaults to the host name
    assert len({str(s["volumes"]) for s in daemons.values()}) == 1  # the same config for all
    assert all(s["build"]["args"]["RELAY_EXTRAS"] == "[postgres]" for s in daemons.values())
    assert all("postgres" in s["depends_on"] for s in daemons.values())
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["migrate"]
    text = (ROOT / "deploy" / "compose.postgres.yml").read_text()
    assert "are all active" in text and "0014-several-active-daemons" in text  # the state, said plainly
    assert "deploy/compose.postgres.yml" in (ROOT / "README.md").read_text()
    assert 'ARG RELAY_EXTRAS=""' in (ROOT / "deploy" / "Containerfile").read_text()
