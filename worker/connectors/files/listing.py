"""Listing a filesystem crawl's files: regular files under the root, by key, and what could not be listed.

One ``os.scandir`` walk over native (bytes) names; directory entries' types come from the walk itself
(``d_type``), so listing costs one system call per directory, not one per file. Only regular files are
listed: FIFOs, sockets and devices are never documents. A directory that cannot be listed (EACCES,
EIO...) is recorded, not skipped: the files under it are unknown, which is not the same as gone.
Symbolic links are listed only with ``follow_symlinks``, and only when they lead to a file or
directory inside the root (the reader checks again when it opens the file).
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.connectors.files.names import display, key_of


class Selection:
    """Include / exclude globs over a file's path relative to the root (``**/`` also matches at the top)."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = None if "**" in include or "*" in include else _compile(include)
        self._exclude = _compile(exclude) if exclude else None

    def __call__(self, rel: str) -> bool:
        """Whether ``rel`` (the display form of a relative path) is crawled."""
        if self._include is not None and self._include.match(rel) is None:
            return False
        return self._exclude is None or self._exclude.match(rel) is None


def _compile(patterns: Sequence[str]) -> re.Pattern[str]:
    variants = {v for p in patterns for v in (p, p.removeprefix("**/"))}
    return re.compile("|".join(f"(?:{fnmatch.translate(v)})" for v in sorted(variants)) or "(?!)")


@dataclass
class Listing:
    """What one walk found: file keys in sorted order, and directories it could not list (key -> reason)."""

    keys: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    #: Entries passed over: ``not_regular`` (FIFOs, sockets, devices), ``outside_root`` (links leading out),
    #: ``excluded`` (files the include / exclude globs leave out).
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one entry passed over for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class Walker:
    """Lists the regular files under ``root`` (a real, absolute native path)."""

    def __init__(self, root: bytes, selected: Selection, *, follow_symlinks: bool) -> None:
        self.root = root
        self.prefix = root if root.endswith(b"/") else root + b"/"
        self.selected = selected
        self.follow_symlinks = follow_symlinks

    def walk(self, stop: threading.Event | None = None) -> Listing:
        """Walk the tree (raises OSError when the root itself cannot be listed); stops early when ``stop`` is set."""
        listing = Listing()
        seen: set[tuple[int, int]] = set()
        root_st = os.stat(self.root)
        seen.add((root_st.st_dev, root_st.st_ino))
        pending: list[bytes] = [b""]
        while pending:
            if stop is not None and stop.is_set():
                break
            rel_dir = pending.pop()
            try:
                self._scan(rel_dir, listing, pending, seen)
            except OSError as exc:
                if not rel_dir:
                    raise
                listing.unreadable[key_of(rel_dir)] = exc.strerror or type(exc).__name__
        listing.keys.sort()
        return listing

    def _scan(self, rel_dir: bytes, listing: Listing, pending: list[bytes], seen: set[tuple[int, int]]) -> None:
        path = self.prefix + rel_dir if rel_dir else self.root
        prefix = rel_dir + b"/" if rel_dir else b""
        keys, selected = listing.keys, self.selected
        subdirs: list[bytes] = []
        with os.scandir(path) as scan:
            # links make the same directory reachable twice: the first name in sorted order keeps it
            entries = sorted(scan, key=_name) if self.follow_symlinks else scan
            for entry in entries:
                rel = prefix + entry.name
                try:
                    if entry.is_file(follow_symlinks=False):  # the common case first: a regular file, by d_type
                        key = key_of(rel)
                        if selected(key if not key.startswith("/") else display(rel)):
                            keys.append(key)
                        else:
                            listing.skip("excluded")
                        continue
                    kind = self._kind(entry, rel, seen)
                except FileNotFoundError:
                    continue  # gone while listing
                except OSError as exc:
                    listing.unreadable[key_of(rel)] = exc.strerror or type(exc).__name__
                    continue
                if kind == "dir":
                    subdirs.append(rel)
                elif kind == "file":
                    key = key_of(rel)
                    if selected(key if not key.startswith("/") else display(rel)):
                        keys.append(key)
                    else:
                        listing.skip("excluded")
                elif kind:
                    listing.skip(kind)
        pending.extend(reversed(subdirs))  # depth first, in name order

    def _kind(self, entry: os.DirEntry[bytes], rel: bytes, seen: set[tuple[int, int]]) -> str:
        """What an entry that is not a regular file is: ``file`` (a link to one), ``dir``, a skip reason, or ``""``
        for entries passed over silently (loops, unfollowed links)."""
        if entry.is_symlink():
            if not self.follow_symlinks:
                return ""
            return self._link(rel, seen)
        if entry.is_dir(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            return _once(st, seen, "dir")
        return "not_regular"

    def _link(self, rel: bytes, seen: set[tuple[int, int]]) -> str:
        """A symbolic link (``follow_symlinks``): followed only when it resolves inside the root."""
        target = os.path.realpath(self.prefix + rel)
        if target == self.root:
            return ""  # a link to the root: a loop
        if not target.startswith(self.prefix):
            return "outside_root"
        st = os.stat(target)
        if stat.S_ISDIR(st.st_mode):
            return _once(st, seen, "dir")
        return "file" if stat.S_ISREG(st.st_mode) else "not_regular"


def _name(entry: os.DirEntry[bytes]) -> bytes:
    return entry.name


def _once(st: os.stat_result, seen: set[tuple[int, int]], kind: str) -> str:
    """``kind`` the first time a directory is met, ``""`` after (a link loop, or the same directory twice)."""
    ident = (st.st_dev, st.st_ino)
    if ident in seen:
        return ""
    seen.add(ident)
    return kind
