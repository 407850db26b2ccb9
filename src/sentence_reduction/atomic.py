"""Atomic writes of local files and folders: write beside the target, then rename into place, so a run
killed mid-write leaves the previous file or folder (or none), never a half-written one. A write that
fills the disk fails with one line (`DiskFullError`): what was written, how much room it needed."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import TypeVar

from sentence_reduction.input_errors import OneLineError

_FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13  # sqlite3's "database or disk is full"
_NO_SPACE = os.strerror(errno.ENOSPC)
_AnyPath = TypeVar("_AnyPath", bound=PurePath)  # a local path, or a dataset's on any file system


class DiskFullError(OneLineError):
    """A write the disk had no room for; the message names it, the room it needed and the room left."""


def staging_path(target: _AnyPath) -> _AnyPath:
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


def size_on_disk(path: Path) -> int:
    """The bytes of a file, or of every file under a folder (0 for a missing path)."""
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() else 0


def free_space(path: Path) -> int:
    """The bytes free on the file system of ``path`` (or of its nearest existing parent)."""
    existing = next((folder for folder in (path, *path.parents) if folder.exists()), Path.cwd())
    return shutil.disk_usage(existing).free


def is_disk_full(error: BaseException, folder: Path, needed: int) -> bool:
    """Whether ``error`` is a full disk's (`full_disk_cause`), or, for a writer that reports nothing a
    full disk would (torch's zip writer: "unexpected pos"), whether less room is left in ``folder``
    than ``needed``."""
    if full_disk_cause(error) is not None:
        return True
    return isinstance(error, OSError | RuntimeError) and free_space(folder) < needed


def full_disk_cause(error: BaseException) -> BaseException | None:
    """The error behind ``error`` (itself, its causes and contexts) that says the disk is full: an
    ENOSPC (or quota) error, SQLite's "database or disk is full", or a folder's copy (shutil) with an
    ENOSPC among its files' messages."""
    seen = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in _FULL_DISK_ERRNOS:
            return cause
        if getattr(cause, "sqlite_errorcode", None) == _SQLITE_FULL:
            return cause
        if isinstance(cause, shutil.Error) and any(_NO_SPACE in str(entry) for entry in cause.args[0]):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def unguarded_disk_full_error(error: BaseException) -> DiskFullError | None:
    """For a full disk met by a write the project does not make itself (a library's: the MLflow store's),
    the one line it can say: the disk is full, and the writer's own first line."""
    cause = full_disk_cause(error)
    if cause is None:
        return None
    first_line = next((line for line in str(cause).splitlines() if line.strip()), "")
    return DiskFullError(f"No space left on device ({type(cause).__name__}: {first_line.strip()[:300]})")


def disk_full_error(what: str, folder: Path, needed: int, lower_bound: bool = False) -> DiskFullError:
    """The one-line error of a write (``what``) into ``folder`` that needed about ``needed`` bytes (more
    than that, when ``lower_bound``: what was written before the disk filled)."""
    return DiskFullError(
        f"{what}: No space left on device (needs {'more than' if lower_bound else 'about'} "
        f"{readable_size(needed)}; {readable_size(free_space(folder))} free in {folder})"
    )


@contextlib.contextmanager
def disk_full_reported(what: str, folder: Path, needed: Callable[[], int]) -> Iterator[None]:
    """Inside the block, an error of a full disk (`is_disk_full`) becomes `disk_full_error`. ``needed``
    tells the bytes the block writes: asked only when the block fails."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as error:
        room = needed()
        if is_disk_full(error, folder, room):
            raise disk_full_error(what, folder, room) from error
        raise


def readable_size(size: float) -> str:
    """``size`` bytes as a person reads them: 512 B, 3.4 MB, 15.2 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
