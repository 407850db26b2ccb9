"""The one error type for bad input: a single line naming the file, the row and the field."""

from __future__ import annotations


class InputDataError(ValueError):
    """Raised when an input file cannot be used as it is; the message is one line."""

    def __init__(self, file: str, problem: str, row: int | None = None, field: str | None = None):
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {problem}")
        self.file, self.row, self.field = file, row, field
