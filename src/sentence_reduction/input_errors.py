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


def find_input_error(error: BaseException | None) -> InputDataError | None:
    """The `InputDataError` behind ``error``, if any: Kedro wraps dataset errors in its own."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputDataError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
