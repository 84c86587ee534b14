"""SHA-256 of input files, cached by (path, size, modification time).

Hashing a feature file of many gigabytes takes minutes; the held-out guard of
the analysis and the training run's manifest both need the hash. The cache
is a JSON file under ``$XDG_CACHE_HOME/personality_toolkit/`` (default
``~/.cache``), keyed by the resolved path, size and ``st_mtime_ns``: a file
that is rewritten, touched or replaced is hashed again. A cache that cannot be
read or written is ignored (the hash is then computed every time); set
``PERSONALITY_TOOLKIT_HASH_CACHE=off`` to turn it off.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from utils.data import sha256_file

logger = logging.getLogger(__name__)

CACHE_ENV = "PERSONALITY_TOOLKIT_HASH_CACHE"
_MAX_ENTRIES = 2000


def cache_path() -> Path | None:
    """Where the cache lives, or None when it is turned off."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return Path(setting)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "personality_toolkit" / "sha256.json"


def _load(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, entries: dict[str, dict]) -> None:
    from utils.io import write_json

    if len(entries) > _MAX_ENTRIES:  # keep the newest
        entries = dict(sorted(entries.items(), key=lambda kv: kv[1].get("mtime_ns", 0))[-_MAX_ENTRIES:])
    try:
        write_json(path, entries)
    except OSError as exc:
        logger.debug("hash cache %s not written: %s", path, exc)


def sha256_cached(path: str | Path) -> str:
    """The file's SHA-256, from the cache when its path, size and mtime are unchanged."""
    p = Path(path).resolve()
    stat = p.stat()
    where = cache_path()
    entries = _load(where) if where is not None else {}
    entry = entries.get(str(p))
    if entry and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_file(p)
    if where is not None:
        entries = _load(where)  # re-read: another process may have added entries meanwhile
        entries[str(p)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        _store(where, entries)
    return digest
