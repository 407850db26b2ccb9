"""One thread for a native library's thread pool (OpenMP, BLAS) around a call, beside torch's threads."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    # Finding the loaded libraries takes milliseconds (3 to 12 a time, measured): once per process, at the
    # first call, when every library a candidate runs on has been imported.
    return ThreadpoolController()


def one_thread(user_api: str) -> AbstractContextManager[object]:
    """A context manager that runs its block with one thread in every library of ``user_api``
    (``"openmp"``, ``"blas"``), and then restores their settings."""
    return _controller().limit(limits=1, user_api=user_api)
