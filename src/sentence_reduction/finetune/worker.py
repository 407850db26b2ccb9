"""One rank of a multi-process fold: `python -m sentence_reduction.finetune.worker WORK_DIR`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sentence_reduction.finetune.engine import FoldJob, fine_tune
from sentence_reduction.finetune.launcher import ERRORS_FOLDER, JOB_FILE


def main(work_dir: str) -> None:
    folder = Path(work_dir)
    try:
        fine_tune(FoldJob.load(folder / JOB_FILE), folder)
    except BaseException as error:
        errors = folder / ERRORS_FOLDER
        errors.mkdir(exist_ok=True)
        message = " ".join(f"{type(error).__name__}: {error}".split())
        (errors / f"rank_{os.environ.get('RANK', '0')}.txt").write_text(message, encoding="utf-8")
        raise


if __name__ == "__main__":
    main(sys.argv[1])
