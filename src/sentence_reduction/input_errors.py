"""Errors that stop a run with one line: bad input (naming the file, the row and the field), and any
other `OneLineError` (a file the project wrote that does not load, a full disk, a project in use)."""

from __future__ import annotations

from typing import TypeVar


class OneLineError(Exception):
    """An error whose message, one line, says all the user needs: the command line prints it alone."""


class InputDataError(OneLineError, ValueError):
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
    return find_error(error, InputDataError)


ErrorType = TypeVar("ErrorType", bound=BaseException)


def find_error(error: BaseException | None, kind: type[ErrorType]) -> ErrorType | None:
    """The error of type ``kind`` behind ``error`` (itself, or along its causes and contexts), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
