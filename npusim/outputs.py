"""Output policy shared by every command that writes: check the path first, then write atomically.

``check_file`` / ``check_dir`` run before any work starts and raise a one-line ConfigError naming the
flag, the value and what is allowed. ``atomic_path`` / ``write_text`` / ``write_bytes`` write to a
fresh temporary name in the target's folder (``O_EXCL``, so nothing planted there is written through)
and ``os.replace`` it onto the target: readers see the old file or the whole new one, and a symlink
planted at the target is replaced, not followed.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from npusim.config.errors import ConfigError, PathText

TMP_SUFFIX = ".tmp"
"""Suffix of the temporary files (``.NAME.XXXXXXXX.tmp`` next to the target)."""


def _fail(flag: str, path, problem: str, allowed: str):
    raise ConfigError(flag, flag.lstrip("-"), PathText(path), problem, allowed)


def _writable(folder: Path) -> bool:
    """True when this process may create files in ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


def _absolute(path) -> Path:
    """``path`` made absolute without following a symlink in its last component."""
    return Path(os.path.abspath(os.fspath(path)))


def check_file(path, flag: str = "--out") -> Path:
    """Refuse a file output path that cannot be written: empty, an existing folder, or a parent that is
    missing, a file or unwritable. Returns the path. Nothing is created."""
    if path is None or not str(path).strip():
        _fail(flag, "" if path is None else path, "is empty", "a file path")
    p = _absolute(path)
    if p.is_dir():
        _fail(flag, path, "is an existing folder", "a file path (not a folder)")
    parent = p.parent
    if not parent.exists():
        _fail(flag, path, "folder does not exist", "a path in an existing folder")
    if not parent.is_dir():
        _fail(flag, path, f"parent {parent} is a file", "a path in an existing folder")
    if not _writable(parent):
        _fail(flag, path, f"folder {parent} is not writable", "a path in a writable folder")
    return Path(path)


def check_dir(path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be used: empty, an existing file, a path under a file, or a
    folder (or, when missing, its nearest existing ancestor) that is unwritable. Missing folders are
    created later by the writer. Returns the path. Nothing is created."""
    if path is None or not str(path).strip():
        _fail(flag, "" if path is None else path, "is empty", "a folder path")
    p = _absolute(path)
    if p.exists() and not p.is_dir():
        _fail(flag, path, "is a file", "a folder (created when missing)")
    probe = p
    while not probe.exists():
        if probe.is_symlink():  # a dangling link: creating the folder would fail
            _fail(flag, path, f"{probe} is a broken symlink", "a folder (created when missing)")
        probe = probe.parent
    if not probe.is_dir():
        _fail(flag, path, f"parent {probe} is a file", "a folder (created when missing)")
    if not _writable(probe):
        _fail(flag, path, f"folder {probe} is not writable", "a folder in a writable place")
    return Path(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on a clean exit it is fsynced and renamed onto
    ``path`` (replacing a file or a symlink there), on an exception it is removed."""
    target = _absolute(path)
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
        tmp = Path(name)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def remove_temporaries(folder) -> int:
    """Delete the temporary files ``atomic_path`` leaves when a process dies mid-write (anywhere
    under ``folder``); return how many were removed."""
    n = 0
    for f in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            f.unlink()
            n += 1
    return n


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    """``open(path, mode)`` on a temporary file that replaces ``path`` when the block ends cleanly."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    return write_bytes(path, text.encode(encoding))
