"""A job hash as Redis holds it, checked before anything parses it.

bullmq's ``Job.fromJSON`` raises on any field it cannot read (data nested too deeply, a timestamp
that is not a number, options that are a JSON array, invalid UTF-8...). Raised there, the error leaves
the job active until its lock expires, then the stalled check puts it back, forever. So the queue
adapter asks :func:`problem` first; a job with a problem is failed on its first pickup, with the
reason, from a :func:`sanitized` copy (the stored data and options stay as they are, for inspection).
Nothing here imports bullmq.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Counters that bullmq's scripts increment (HINCRBY fails on anything but an integer).
COUNTERS = ("atm", "ats")
#: Integer fields ``Job.fromJSON`` converts.
_INTEGERS = ("timestamp", "delay", "priority", "atm", "ats", "stc", "attemptsMade", "processedOn", "finishedOn")
#: JSON fields ``Job.fromJSON`` parses besides data and options.
_JSON_FIELDS = ("progress", "stacktrace", "parent")


#: The largest stored field of a job hash (other than ``data``, bounded by ``job_data_max_bytes``) the worker
#: reads: a larger ``opts``, ``progress``, ``returnvalue``, ``stacktrace``... fails the job unread.
FIELD_MAX_BYTES = 1_048_576
#: The field a bounded read adds for the fields it left out: ``name=bytes,...``.
OVERSIZE = "cw:oversize"
#: The line of bullmq's scripts (``prepareJobForProcessing``) that hands a taken job's whole hash back.
_WHOLE_HASH = 'return {rcall("HGETALL", jobKey), jobId, 0, 0}'
# Every field of the hash up to its bound, sized with HSTRLEN before it is read (O(1)); a field over its
# bound is not read at all, only named in OVERSIZE. Replaces HGETALL in the scripts that take a job.
_BOUNDED_HASH = """
local function cwBoundedHash(jobKey)
  local fields, over = redis.call("HKEYS", jobKey), {}
  for _, field in ipairs(fields) do
    local size = redis.call("HSTRLEN", jobKey, field)
    if size > (field == "data" and %(data)d or %(field)d) then
      over[#over + 1] = field .. "=" .. size
    end
  end
  if #over == 0 then
    return redis.call("HGETALL", jobKey)
  end
  local out, skip = {}, {}
  for _, item in ipairs(over) do
    skip[string.match(item, "^(.*)=%%d+$")] = true
  end
  for _, field in ipairs(fields) do
    if not skip[field] then
      out[#out + 1] = field
      out[#out + 1] = redis.call("HGET", jobKey, field)
    end
  end
  out[#out + 1] = "%(oversize)s"
  out[#out + 1] = table.concat(over, ",")
  return out
end
"""


def bounded_script(source: str, *, max_data_bytes: int) -> str:
    """A bullmq script that takes a job (``moveToActive``, ``moveToFinished``, ``moveToDelayed``) with the
    job's hash read field by field up to its bound instead of whole (a 64 MB ``opts`` never leaves Redis).
    Raises ValueError when the script no longer has the line it replaces (another bullmq version)."""
    if source.count(_WHOLE_HASH) != 1:
        raise ValueError("bullmq script without the one HGETALL of the taken job: re-check job_hash.bounded_script")
    function = _BOUNDED_HASH % {"data": max_data_bytes, "field": FIELD_MAX_BYTES, "oversize": OVERSIZE}
    return function + source.replace(_WHOLE_HASH, "return {cwBoundedHash(jobKey), jobId, 0, 0}")


def oversize_problem(raw: dict[str, Any], *, max_data_bytes: int) -> str | None:
    """The fields a bounded read left out (:func:`bounded_script`), as the reason the job cannot be read."""
    over = raw.get(OVERSIZE)
    if not over:
        return None
    sizes = dict(item.rsplit("=", 1) for item in str(over).split(",") if "=" in item)
    if "data" in sizes:
        return f"job data is {sizes['data']} bytes, above job_data_max_bytes={max_data_bytes}"
    named = ", ".join(f"{name} ({size} bytes)" for name, size in sizes.items())
    return f"job field {named} above the {FIELD_MAX_BYTES}-byte bound on a job field; not read"


def json_type(value: Any) -> str:
    """A value's type in the producer's terms (JSON), not Python's."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _utf8_problem(field: str, text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"job {field} is not valid UTF-8"
    return None


def _loads(field: str, text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except RecursionError:
        return None, f"job {field} is nested too deeply to read"
    except ValueError as exc:
        return None, f"job {field} is not valid JSON ({exc})"


def _is_integer(text: Any) -> bool:
    return isinstance(text, str) and text.strip().lstrip("-").isdigit()


def _not_finite(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)


def _option_problem(opts: dict[str, Any]) -> str | None:
    attempts = opts.get("attempts")
    if attempts is not None and _not_finite(attempts):
        return f"job option attempts must be a whole number, got {json_type(attempts)} {attempts!r}"
    for name in ("delay", "priority"):
        value = opts.get(name)
        if value is not None and _not_finite(value):
            return f"job option {name} must be a number, got {json_type(value)} {value!r}"
    backoff = opts.get("backoff")
    if backoff is not None and (isinstance(backoff, bool) or not isinstance(backoff, int | dict)):
        return f"job option backoff must be a number or an object, got {json_type(backoff)}"
    return None


def stored_bytes(text: str) -> int:
    """The size of ``text`` as Redis stored it (UTF-8; bytes that were not UTF-8 read as lone surrogates).
    ASCII, as JSON usually is, is a byte a character: counted without copying it to count it."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def size_problem(raw: dict[str, Any], *, max_data_bytes: int) -> str | None:
    """The data's size, checked before it is parsed (a 64 MB payload is refused without being read)."""
    data = raw.get("data") or ""
    if len(data) <= max_data_bytes // 4:  # at most 4 bytes a character: no need to count
        return None
    size = stored_bytes(data)
    return f"job data is {size} bytes, above job_data_max_bytes={max_data_bytes}" if size > max_data_bytes else None


def text_problem(raw: dict[str, Any]) -> str | None:
    """Invalid UTF-8 in the name, data or options (read with ``surrogateescape``: it shows as lone surrogates)."""
    for field in ("name", "data", "opts"):
        value = raw.get(field)
        if isinstance(value, str) and not value.isascii() and (found := _utf8_problem(field, value)):
            return found
    return None


def options_problem(opts: dict[str, Any]) -> str | None:
    """Options the port would choke on later (attempts that are not a finite number retry forever)."""
    return _option_problem(opts)


def _fields_problem(raw: dict[str, Any]) -> str | None:
    for field in _JSON_FIELDS:
        if isinstance(raw.get(field), str) and (found := _utf8_problem(field, raw[field])):
            return found
    for field in _INTEGERS:
        if raw.get(field) not in (None, "") and not _is_integer(raw[field]):
            return f"job field {field} must be an integer, got {raw[field][:40]!r}"
    for field in _JSON_FIELDS:
        if raw.get(field) and (found := _loads(field, raw[field])[1]):
            return found
    return None


def _json_problem(raw: dict[str, Any]) -> str | None:
    if found := _loads("data", raw.get("data") or "{}")[1]:
        return found
    opts, found = _loads("options", raw.get("opts") or "{}")
    if found:
        return found
    if not isinstance(opts, dict):
        return f"job options must be a JSON object, got {json_type(opts)}"
    return _option_problem(opts)


def problem(raw: dict[str, Any], *, max_data_bytes: int) -> str | None:
    """What makes this job hash unreadable, in the producer's terms; None if nothing is found."""
    return (
        size_problem(raw, max_data_bytes=max_data_bytes)
        or text_problem(raw)
        or _fields_problem(raw)
        or _json_problem(raw)
    )


def sanitized(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy ``Job.fromJSON`` can read, to fail the job with: no data, one attempt, counters and fields
    it cannot read reset; the keep-on-fail option kept when it is readable."""
    opts: dict[str, Any] = {"attempts": 1}
    try:
        stored = json.loads(raw.get("opts") or "{}")
    except (ValueError, RecursionError):
        stored = {}
    if isinstance(stored, dict) and isinstance(stored.get("removeOnFail"), bool | int | dict):
        opts["removeOnFail"] = stored["removeOnFail"]
    clean = {key: value for key, value in raw.items() if key not in (*_INTEGERS, *_JSON_FIELDS, "returnvalue")}
    clean.update({field: raw[field] for field in _INTEGERS if _is_integer(raw.get(field))})
    name = raw.get("name")
    clean["name"] = name if isinstance(name, str) and _utf8_problem("name", name) is None else ""
    clean["data"] = "null"
    clean["opts"] = json.dumps(opts)
    return clean
