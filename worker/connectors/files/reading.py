"""Opening and reading one listed file: inside the root, regular, bounded, never blocking.

Whatever happened to a path since it was listed (swapped for a symbolic link, a FIFO or a device),
the check is made on what is actually opened, so there is no gap between check and use:

- without ``follow_symlinks``, each directory on the way is opened from its parent's descriptor with
  ``O_NOFOLLOW`` and the file from its directory's, also with ``O_NOFOLLOW``: no link is ever
  followed, anywhere in the path;
- with ``follow_symlinks``, the path is resolved to an ``O_PATH`` descriptor (which opens nothing),
  whose real path (``/proc/self/fd``) must be inside the root and which must be a regular file; only
  then is that same file opened for reading, through the descriptor;
- files are opened ``O_NONBLOCK`` (opening a FIFO does not wait for a writer), and only what
  ``fstat`` of the opened descriptor says is a regular file is read;
- a read takes at most ``max_size + 1`` bytes, whatever size the file reports (files in ``/proc``
  report 0).

Without ``follow_symlinks`` a device node put in place of a listed file is opened (non-blocking, no
controlling terminal) before ``fstat`` refuses it; putting one there takes ``CAP_MKNOD``. With
``follow_symlinks`` nothing but a regular file inside the root is ever opened for reading.
"""

from __future__ import annotations

import errno
import os
import stat

from worker.connectors.files.names import display
from worker.errors import Refused, TooLarge

_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_HERE = _OPEN | os.O_NOFOLLOW
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Directory descriptors kept open by one reader (files are read in sorted order, so a few suffice).
_DIRS_KEPT = 32
_CHUNK = 1024 * 1024


def _refused_link(exc: OSError) -> Exception:
    """ELOOP from ``O_NOFOLLOW``: the path is a link now; any other error as it is."""
    if exc.errno == errno.ELOOP:
        return Refused("a symbolic link, and follow_symlinks is false")
    return exc


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class Reader:
    """Reads files under ``root`` (a real, absolute native path). Not thread-safe: one per thread.

    Holds directory descriptors between calls: :meth:`close` when done.
    """

    def __init__(self, root: bytes, *, follow_symlinks: bool, max_size: int) -> None:
        self.root = root
        self.prefix = root if root.endswith(b"/") else root + b"/"
        self.follow_symlinks = follow_symlinks
        self.max_size = max_size
        self._dirs: dict[bytes, int] = {}

    def stat(self, rel: bytes) -> os.stat_result:
        """The file's metadata, without opening it (links not followed unless ``follow_symlinks``)."""
        if self.follow_symlinks:
            return os.stat(self.prefix + rel)
        parent, _, name = rel.rpartition(b"/")
        return os.stat(name, dir_fd=self._dir(parent), follow_symlinks=False)

    def read(self, rel: bytes) -> tuple[os.stat_result, bytes]:
        """The file's metadata (of the opened file) and content; Refused or OSError when it cannot be read."""
        if self.follow_symlinks:
            fd = self._open_followed(rel)
        else:  # _open_here, inline: this runs once per file
            parent, _, name = rel.rpartition(b"/")
            dir_fd = self._dirs.get(parent)
            try:
                fd = os.open(name, _OPEN_HERE, dir_fd=self._dir(parent) if dir_fd is None else dir_fd)
            except OSError as exc:
                raise _refused_link(exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{kind_of(st.st_mode)}, not a regular file")
            reported = st.st_size
            if reported > self.max_size:
                raise TooLarge(reported, self.max_size)
            data = os.read(fd, reported + 1)
            if len(data) == reported:  # asked for one byte more than fstat said and got exactly that: the end
                return st, data
            return st, self._read_rest(fd, data)
        finally:
            os.close(fd)

    def _read_rest(self, fd: int, data: bytes) -> bytes:
        """The file was not the size it reported (``/proc`` files say 0, or it changed): read to the end, never
        more than ``max_size + 1`` bytes in all."""
        limit = self.max_size + 1
        chunks = [data]
        total = len(data)
        while data and total < limit:
            data = os.read(fd, min(limit - total, _CHUNK))
            chunks.append(data)
            total += len(data)
        if total > self.max_size:
            raise TooLarge(None, self.max_size)
        return b"".join(chunks)

    def _open_followed(self, rel: bytes) -> int:
        """Resolve the path to an ``O_PATH`` descriptor (nothing is opened for reading yet), check where it
        really is and what it is, then open that very file through ``/proc/self/fd``."""
        pinned = os.open(self.prefix + rel, os.O_PATH | os.O_CLOEXEC)
        try:
            proc = b"/proc/self/fd/%d" % pinned
            try:
                real = os.readlink(proc)
            except OSError:
                raise Refused("cannot check where its links lead (/proc/self/fd is not readable)") from None
            if not real.startswith(self.prefix):
                raise Refused(f"leads outside the root (to {display(real)!r})")
            mode = os.fstat(pinned).st_mode
            if not stat.S_ISREG(mode):
                raise Refused(f"{kind_of(mode)}, not a regular file")
            return os.open(proc, _OPEN)
        finally:
            os.close(pinned)

    def _dir(self, rel_dir: bytes) -> int:
        """A descriptor of the directory ``rel_dir``, reached from the root without following any link."""
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            return fd
        if len(self._dirs) >= _DIRS_KEPT:
            self.close()
        if not rel_dir:
            fd = os.open(self.root, _DIR & ~os.O_NOFOLLOW)  # the root itself may be a link (resolved at start)
        else:
            parent, _, name = rel_dir.rpartition(b"/")
            try:
                fd = os.open(name, _DIR, dir_fd=self._dir(parent))
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(f"{display(rel_dir)!r} is no longer a directory (a link or a file now)") from None
                raise
        self._dirs[rel_dir] = fd
        return fd

    def close(self) -> None:
        """Close the directory descriptors held."""
        dirs, self._dirs = self._dirs, {}
        for fd in dirs.values():
            os.close(fd)
