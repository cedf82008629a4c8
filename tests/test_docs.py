"""The README and the example configuration document every setting (docs that cannot drift silently)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from worker.catalog import CatalogFile
from worker.connectors.registry import build_registry
from worker.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table() -> None:
    """Each Settings field appears as `name` in the README configuration table."""
    readme = (REPO / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in readme]
    assert not missing, f"README lacks settings: {missing}"


def test_every_setting_is_in_the_example_config() -> None:
    """Each Settings field appears in config/crawl-worker.example.toml, and the file's active keys load."""
    text = (REPO / "config" / "crawl-worker.example.toml").read_text()
    missing = [name for name in Settings.model_fields if f"{name} =" not in text]
    assert not missing, f"example config lacks settings: {missing}"
    Settings(**tomllib.loads(text))


def test_example_catalog_is_valid() -> None:
    """config/catalog.example.toml parses as a catalog."""
    CatalogFile.model_validate(tomllib.loads((REPO / "config" / "catalog.example.toml").read_text()))


def test_example_catalog_entries_validate_against_their_connectors() -> None:
    """Every instance in config/catalog.example.toml is valid for its connector's config model."""
    registry = build_registry()
    entries = tomllib.loads((REPO / "config" / "catalog.example.toml").read_text())["instances"]
    for cid, entry in entries.items():
        cls = registry.get(entry["connector"])
        assert cls.config_model.model_validate(entry.get("config", {})), cid


def test_every_builtin_connector_field_is_documented() -> None:
    """docs/connectors.md has a row or mention for every field of every built-in connector's config."""
    text = (REPO / "docs" / "connectors.md").read_text()
    registry = build_registry()
    missing = [
        f"{name}.{field}"
        for name in registry.names()
        for field in registry.get(name).config_model.model_fields
        if f"`{field}`" not in text
    ]
    assert not missing, f"docs/connectors.md lacks: {missing}"


def test_pipeshub_example_settings_load() -> None:
    """config/pipeshub.example.toml is valid settings, for PipesHub's queue, with numeric progress."""
    settings = Settings(**tomllib.loads((REPO / "config" / "pipeshub.example.toml").read_text()))
    assert (settings.queue_name, settings.prefix, settings.progress_format) == ("crawling-scheduler", "bull", "number")


def test_example_catalog_rules_validate_against_their_connectors() -> None:
    """Every [connector_types] rule in config/catalog.example.toml is valid for its connector's config model."""
    registry = build_registry()
    rules = tomllib.loads((REPO / "config" / "catalog.example.toml").read_text())["connector_types"]
    assert rules, "the example shows a rule"
    for rule in rules.values():
        registry.get(rule["connector"]).config_model.model_validate(rule.get("config", {}))
