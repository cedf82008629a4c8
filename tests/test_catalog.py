"""Catalog: instances by connectorId, secrets by reference, reload on change."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from worker.catalog import Catalog
from worker.errors import ConfigError, CredentialsError, UnconfiguredInstance


def test_lookup_secrets_and_reload(tmp_path: Path) -> None:
    """Entries resolve secrets from env or files at use; an edited file is picked up without a restart."""
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret\n")
    path = tmp_path / "catalog.toml"
    path.write_text(
        '[instances."a"]\nconnector = "Local FS"\nconfig = { root = "/x" }\n'
        f'secrets = {{ token = {{ env = "TOKEN_A" }}, pw = {{ file = "{secret_file}" }} }}\n'
    )
    catalog = Catalog.load(path)
    entry = catalog.get("a")
    assert entry.connector_key == "local-fs"
    secrets = entry.resolve_secrets({"TOKEN_A": "t0k"}.get)
    assert secrets["token"].get_secret_value() == "t0k"
    assert secrets["pw"].get_secret_value() == "s3cret"
    assert "t0k" not in repr(secrets)
    with pytest.raises(CredentialsError, match="TOKEN_A is not set"):
        entry.resolve_secrets(dict[str, str]().get)
    with pytest.raises(UnconfiguredInstance, match="'b' is not configured"):
        catalog.get("b")
    path.write_text(path.read_text() + '[instances."b"]\nconnector = "web"\n')
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    assert catalog.get("b").connector_key == "web"


def test_an_edited_entry_is_picked_up_once_the_check_interval_has_passed(tmp_path: Path) -> None:
    """Lookups that find their entry look at the file at most every check_interval_s; then the edit shows."""
    path = tmp_path / "catalog.toml"
    path.write_text('[instances."a"]\nconnector = "web"\nconfig = { max_pages = 1 }\n')
    catalog = Catalog.load(path)
    assert catalog.get("a").config == {"max_pages": 1}
    path.write_text('[instances."a"]\nconnector = "web"\nconfig = { max_pages = 2 }\n')
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))
    assert catalog.get("a").config == {"max_pages": 1}  # checked less than a second ago
    catalog.check_interval_s = 0
    assert catalog.get("a").config == {"max_pages": 2}


def test_invalid_catalog_is_a_config_error(tmp_path: Path) -> None:
    """An unknown key in an entry stops start-up with the file named."""
    path = tmp_path / "catalog.toml"
    path.write_text('[instances."a"]\nconnecter = "web"\n')
    with pytest.raises(ConfigError, match=r"catalog .* is invalid"):
        Catalog.load(path)


def test_config_hash_changes_with_config() -> None:
    """A changed configuration gets a new hash (so the next run starts fresh)."""
    from worker.catalog import InstanceEntry

    a = InstanceEntry(connector="web", config={"start_urls": ["http://a/"]})
    b = InstanceEntry(connector="web", config={"start_urls": ["http://b/"]})
    assert a.config_hash != b.config_hash
    assert a.config_hash == InstanceEntry(connector="web", config={"start_urls": ["http://a/"]}).config_hash


def _instances(count: int, start: int = 0) -> str:
    return "".join(
        f'[instances."i{i}"]\nconnector = "web"\nconfig = {{ start_urls = ["https://s{i}.example/"] }}\n'
        for i in range(start, start + count)
    )


def test_a_big_catalog_is_parsed_in_slices_to_the_same_entries() -> None:
    """More than SLICE_INSTANCES instances (a top-level comment first): slice by slice, same entries as one parse."""
    from worker.catalog import SLICE_INSTANCES, CatalogFile, parse_catalog

    text = "# fleet catalog\n" + _instances(2 * SLICE_INSTANCES + 7)
    entries = parse_catalog(text).instances
    assert len(entries) == 2 * SLICE_INSTANCES + 7
    assert entries == CatalogFile.model_validate(tomllib.loads(text)).instances


def test_slices_that_do_not_stand_alone_fall_back_to_one_parse() -> None:
    """A multi-line string holding a table-like line at a cut, and an instance split across slices, still load."""
    from worker.catalog import SLICE_INSTANCES, parse_catalog

    quoted = '[instances."q"]\nconnector = "web"\nconfig = { note = """\n'
    quoted += "".join(f'[instances."fake{i}"]\n' for i in range(SLICE_INSTANCES + 1)) + '""" }\n'
    entries = parse_catalog(quoted + _instances(3)).instances
    assert set(entries) == {"q", "i0", "i1", "i2"}
    assert entries["q"].config["note"].startswith('[instances."fake0"]')

    split = _instances(SLICE_INSTANCES) + '[instances."late"]\nconnector = "web"\n' + _instances(5, 10_000)
    split += '[instances."i0".config]\nmax_pages = 3\n'  # reopens an instance from the first slice: invalid TOML
    with pytest.raises(tomllib.TOMLDecodeError):
        parse_catalog(split)
