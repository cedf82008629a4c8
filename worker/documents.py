"""The one document model every connector emits and every sink accepts."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from pydantic import BaseModel, Field


def stable_id(source: str) -> str:
    """A stable document id from its source (URL or path): same source, same id, on every run."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


def content_hash(data: bytes) -> str:
    """The content hash documents carry, so sinks and incremental runs can detect changes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Document(BaseModel):
    """One crawled item, or a tombstone (``deleted=True``) for an item that disappeared."""

    id: str
    source: str = Field(description="URL or path the document came from.")
    mime_type: str | None = None
    title: str | None = None
    text: str | None = None
    content_ref: str | None = Field(None, description="Where binary content is stored (not inlined).")
    content_hash: str | None = None
    size: int = Field(0, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    fetched_at: float = Field(default_factory=time.time)
    deleted: bool = False

    @classmethod
    def tombstone(cls, source: str, doc_id: str | None = None) -> Document:
        """A deletion record for ``source``."""
        return cls(id=doc_id or stable_id(source), source=source, deleted=True)


class ItemFailure(BaseModel):
    """One item a step could not fetch; counted, reported, and not fatal to the crawl."""

    source: str
    reason: str
    retryable: bool = False
