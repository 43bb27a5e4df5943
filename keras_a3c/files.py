"""Atomic writes for saves, checkpoints, exports and plots: build aside, flush, then rename into place.

A process killed half-way leaves at most a hidden staging directory `.<name>.tmp-*` beside
the target, never a half-written target, and an existing target is never clobbered unless
the caller asks for it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

STAGING_MARK = ".tmp-"


def staging_prefix(name: str) -> str:
    """The name prefix of the hidden staging directories of writes to `name`."""
    return f".{name}{STAGING_MARK}"


def is_staging(entry: str) -> bool:
    """Whether a directory entry's name is a staging directory of `write_atomically`."""
    return entry.startswith(".") and STAGING_MARK in entry


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], what: str, overwrite: bool = False) -> str:
    """Have `write(target)` create a file or directory at `target` (inside a staging directory
    beside `path`), then move it to `path`. Returns the absolute path.

    Nothing is left behind if `write` fails, not even the parent directories made for `path`.
    An existing `path` is a `FileExistsError` unless `overwrite`, in which case it is replaced
    only once the new one is complete. A `path` that cannot be written is an `OSError` naming
    it. `what` names the thing in error messages ("save", "export").
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{what} path {path} already exists; choose a new path or remove it")
    parent, name = os.path.split(path)
    created = _missing_directories(parent)
    done = False
    try:
        try:
            os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=staging_prefix(name), dir=parent)
        except OSError as exc:
            raise OSError(f"cannot write the {what} to {path}: {exc}") from exc
        try:
            target = os.path.join(staging, name)
            write(target)
            _fsync_tree(staging)
            _publish(target, path, overwrite)
            _fsync(parent)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if not done:
            for directory in created:  # deepest first; stops at one that is no longer empty
                try:
                    os.rmdir(directory)
                except OSError:
                    break
    return path


def _publish(target: str, path: str, overwrite: bool) -> None:
    if os.path.isdir(target):
        if overwrite and os.path.lexists(path):
            # Two renames: a crash between them leaves the old one complete under `.<name>.old-*`.
            parent, name = os.path.split(path)
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rename(path, os.path.join(old, name))
            os.rename(target, path)
            shutil.rmtree(old)
        else:
            os.rename(target, path)
    elif overwrite:
        os.replace(target, path)
    else:
        try:
            os.link(target, path)  # unlike rename, never replaces a file that appeared at `path` meanwhile
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links
            os.rename(target, path)


def _missing_directories(directory: str) -> list[str]:
    """`directory` and those of its ancestors that do not exist, deepest first."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    """Flush every file and directory under `root`, so the rename publishes complete data."""
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync(os.path.join(directory, name))
        _fsync(directory)
