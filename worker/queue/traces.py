"""A traceback as the job's stored stack trace: module paths instead of this machine's install paths.

bullmq stores ``traceback.format_exc()``; absolute paths tell whoever reads the queue where and how the
worker is installed. Here each frame's file is named from its package (``worker/connectors/web/connector.py``,
``httpx/_client.py``) or by its file name alone.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

#: A frame's file in a formatted traceback.
_FRAME_FILE = re.compile(r'File "([^"]+)"')
#: Where this install's code lives: the repository (or site-packages) that holds ``worker/``.
_CODE_ROOT = str(Path(__file__).resolve().parent.parent) + os.sep


def _portable_path(match: re.Match[str]) -> str:
    path = match.group(1)
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        if marker in path:
            return f'File "{path.split(marker, 1)[1]}"'
    if path.startswith(_CODE_ROOT):
        return f'File "{path[len(_CODE_ROOT) :]}"'
    if path.startswith(sys.base_prefix):
        return f'File "{Path(path).name}"'
    return f'File "{Path(path).name}"'


def portable_trace(err: BaseException) -> list[str]:
    """``err``'s traceback as bullmq stores it (one string), with module paths instead of absolute ones."""
    if err.__traceback__ is None and err.__cause__ is None:
        return []
    return [_FRAME_FILE.sub(_portable_path, "".join(traceback.format_exception(err)))]
