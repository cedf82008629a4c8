"""Reading one file: bounded whatever size it reports, regular files only, links refused or kept inside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.connectors.files.reading import Reader
from worker.errors import Refused, TooLarge


def test_a_file_that_reports_size_zero_is_still_bounded() -> None:
    """/proc files report size 0: read whole when small enough, refused after max_size + 1 bytes when not."""
    proc = os.path.realpath(b"/proc/self")
    st, data = Reader(proc, follow_symlinks=False, max_size=1_000_000).read(b"status")
    assert st.st_size == 0
    assert b"VmRSS" in data
    with pytest.raises(TooLarge, match="it grew while read"):
        Reader(proc, follow_symlinks=False, max_size=100).read(b"status")


def test_only_regular_files_are_opened_for_reading(tmp_path: Path) -> None:
    """A directory, a FIFO (no writer: opening must not wait) and a socket are refused by what they are."""
    import socket

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        reader = Reader(os.fsencode(tmp_path), follow_symlinks=False, max_size=100)
        with pytest.raises(Refused, match="a FIFO, not a regular file"):
            reader.read(b"fifo")
        with pytest.raises(Refused, match="a directory, not a regular file"):
            reader.read(b"dir")
        with pytest.raises(OSError, match="No such device or address"):
            reader.read(b"sock")
        reader.close()


def test_a_larger_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A file over max_size is refused by its reported size."""
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(TooLarge, match=r"\(101 B; the limit is 100 B\)"):
        Reader(os.fsencode(tmp_path), follow_symlinks=False, max_size=100).read(b"big")
