"""Whether a file the project wrote earlier still loads, checked cheaply before it is trusted: present,
the size it was written with (when known), and readable in its format (a safetensors header that
covers the file, a torch zip's directory, JSON, a NumPy array's header and length). Milliseconds
whatever the file's size: no tensor is read.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

from sentence_reduction.input_errors import OneLineError

TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save's zip files


class UnusableFileError(OneLineError):
    """A file the project wrote that does not load; the message names it, says why and what rebuilds it."""

    def __init__(self, path: Path, problem: str, remedy: str | None = None):
        super().__init__(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))
        self.path, self.problem = path, problem


def file_problem(path: Path, size: int | None = None) -> str | None:
    """Why ``path`` would not load, in a few words, or None when it would. ``size``: the bytes it was
    written with, when recorded."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{actual} bytes where {size} were written"
    if actual == 0:
        return "empty"
    try:
        _read_structure(path)
    except Exception as error:  # each format's reader raises its own types
        return f"does not load ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
    return None


def check_file(path: Path, size: int | None = None, remedy: str | None = None) -> None:
    """Raise `UnusableFileError` when ``path`` would not load (see `file_problem`)."""
    problem = file_problem(path, size)
    if problem is not None:
        raise UnusableFileError(path, problem, remedy)


def _read_structure(path: Path) -> None:
    suffix = path.suffix
    if suffix == ".safetensors":
        with safe_open(str(path), framework="pt"):  # checks that the header's tensors cover the file
            pass
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix in TORCH_SUFFIXES:
        with zipfile.ZipFile(path) as archive:  # the directory at its end: gone when cut short
            archive.infolist()
    elif suffix == ".npy":
        np.load(path, mmap_mode="r", allow_pickle=False)  # the header, and a length that matches it
