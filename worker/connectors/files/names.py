"""File names as the filesystem connector keeps and shows them, whatever bytes they are made of.

POSIX file names are bytes; most are UTF-8, some are not (``caf\\xe9.txt`` written by a Latin-1
tool). Every name is crawled, and each has three forms:

- the *native* form, ``bytes``, relative to the root: what is opened;
- the *key*, a ``str`` that is valid UTF-8 and JSON-safe, one per native name (stored as the field
  of the run's file map and as the checkpoint's cursor): the name itself when it is UTF-8, else
  ``"/"`` (which no relative path starts with) and the name with backslashes doubled and every
  byte that is not UTF-8 written ``\\xNN``;
- the *display* form, for documents' ``source`` and ``title``: the name with bytes that are not
  UTF-8 written ``\\xNN`` (readable, JSON-safe; not necessarily unique, so ids are computed from
  the native bytes, and documents carry those bytes in ``metadata.path_bytes``).

For UTF-8 names all three agree with what earlier versions stored, so ids and stored state carry over.
"""

from __future__ import annotations

import hashlib
import re

_ESCAPED = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def key_of(rel: bytes) -> str:
    """The key of the relative native name ``rel``."""
    try:
        return rel.decode("utf-8")
    except UnicodeDecodeError:
        return "/" + rel.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def native(key: str) -> bytes:
    """The relative native name a key stands for (the inverse of :func:`key_of`)."""
    if not key.startswith("/"):
        return key.encode("utf-8")
    return _ESCAPED.sub(_unescape, key[1:].encode("utf-8"))


def _unescape(match: re.Match[bytes]) -> bytes:
    token = match.group(1)
    return b"\\" if token == b"\\" else bytes([int(token[1:], 16)])


def display(name: bytes) -> str:
    """How ``name`` is shown: UTF-8 as it is, other bytes as ``\\xNN``."""
    return name.decode("utf-8", "backslashreplace")


def is_utf8(key: str) -> bool:
    """Whether the name behind ``key`` is valid UTF-8 (its key, display form and name agree)."""
    return not key.startswith("/")


def document_id(path: bytes) -> str:
    """A stable document id from an absolute native path (for UTF-8 paths, ``documents.stable_id`` of it)."""
    return hashlib.sha256(path).hexdigest()[:32]
