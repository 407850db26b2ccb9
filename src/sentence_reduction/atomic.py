"""Atomic writes of local files and folders: write beside the target, then rename into place, so a run
killed mid-write leaves the previous file or folder (or none), never a half-written one."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def staging_path(target: Path) -> Path:
    """A hidden, unique path beside ``target`` (same file system, so the final rename is atomic)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


def replace_with(staging: Path, target: Path) -> None:
    """Put the finished file or folder ``staging`` in ``target``'s place. A folder replaces an existing
    one through a retired copy (a rename cannot replace a non-empty folder), removed afterwards."""
    if staging.is_dir() and target.exists():
        retired = staging.with_suffix(".old")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def remove(path: Path) -> None:
    """Remove a file or folder, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def written_atomically(target: Path) -> Iterator[Path]:
    """Yield a staging path to write ``target``'s new content to (a file or a folder); once the block
    ends without error it replaces ``target``, and on an error it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(target)
    try:
        yield staging
    except BaseException:
        remove(staging)
        raise
    replace_with(staging, target)
