"""Project command line: Kedro's own `run`, with bad input reported as one line instead of a traceback."""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from sentence_reduction.input_errors import InputDataError


@click.group(name="sentence-reduction")
def cli() -> None:
    """Commands of the sentence-reduction project."""


@cli.command(name="run", params=kedro_run.params, help=kedro_run.help)
@click.pass_context
def run(context: click.Context, **options: Any) -> Any:
    try:
        return context.invoke(kedro_run, **options)
    except Exception as error:
        input_error = _find_input_error(error)
        if input_error is None:
            raise
        raise click.ClickException(str(input_error)) from None


def _find_input_error(error: BaseException | None) -> InputDataError | None:
    """The `InputDataError` behind ``error``: Kedro wraps dataset errors in its own."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputDataError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
