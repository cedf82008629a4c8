"""File names of any bytes: keys that round-trip, never collide, and are valid UTF-8."""

from __future__ import annotations

import random

from worker.connectors.files.names import display, document_id, is_utf8, key_of, native
from worker.documents import stable_id


def test_utf8_names_are_their_own_key_and_keep_their_id() -> None:
    """A UTF-8 name's key and display form are the name; its id is what earlier versions computed."""
    rel = "docs/été/résumé.txt"
    assert key_of(rel.encode()) == rel
    assert native(rel) == rel.encode()
    assert display(rel.encode()) == rel
    assert is_utf8(rel)
    assert document_id(b"/data/" + rel.encode()) == stable_id("/data/" + rel)


def test_other_names_round_trip_and_never_collide() -> None:
    """Random byte names (backslashes and escape look-alikes included): distinct keys, valid UTF-8, invertible."""
    rng = random.Random(7)
    alphabet = [bytes([b]) for b in range(1, 256) if b != ord("/")] + [b"\\x", b"\\\\", b"\\xe9", "é".encode()]
    names = {b"caf\xe9", b"caf\\xe9", b"caf\\\\xe9", b"caf\\\xe9", b"\\", b"\xff/\\x"}
    names |= {b"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(5000)}
    keys = {key_of(name): name for name in names}
    assert len(keys) == len(names)
    for key, name in keys.items():
        key.encode("utf-8")
        assert native(key) == name
        assert is_utf8(key) == _decodes(name)


def _decodes(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_keys_sort_like_their_names_among_utf8_names() -> None:
    """Among UTF-8 names the key order is the byte order (the cursor's order is stable across versions)."""
    names = sorted(n.encode() for n in ["a", "a/b", "a.b", "a-b", "Z", "é", "ä/x", "b"])
    assert sorted(key_of(n) for n in names) == [n.decode() for n in names]
