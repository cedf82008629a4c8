"""The README and the example configuration document every setting (docs that cannot drift silently)."""

from __future__ import annotations

import re
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


def test_the_changelog_leads_with_the_packages_version() -> None:
    """CHANGELOG.md's newest section is the version the package reports (the version moves with the log)."""
    from worker import __version__

    text = (REPO / "CHANGELOG.md").read_text()
    newest = re.search(r"^## \[(\d+\.\d+\.\d+)\]", text, re.M)
    assert newest is not None, "CHANGELOG.md has no '## [x.y.z]' section"
    assert newest.group(1) == __version__


def test_contributor_docs_name_only_commands_the_project_has() -> None:
    """Every `make X` in the README and DEVELOPERS.md is a Makefile target; every other command line they tell
    a contributor to run starts with a program the project installs or the machine always has."""
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    known = {"make", "crawl-worker", "python", "python3", "pip", "git", "npm", "node", "docker", "kubectl", "curl"}
    known |= {"systemctl", "apt-get", "redis-server", "redis-cli", "export", "cd", ".venv/bin/python"}
    for name in ("README.md", "DEVELOPERS.md"):
        text = (REPO / name).read_text()
        for target in re.findall(r"`make ([a-z][a-z-]*)", text):
            assert target in targets, f"{name} names `make {target}`, which the Makefile lacks"
        for command in re.findall(r"\brun `([^`]+)`", text):
            program = command.split()[0]
            assert program in known or program.startswith(("deploy/", "bench/", "tests/")), f"{name}: run `{command}`"
