"""Project command line: Kedro's own `run`, with bad input reported as one line instead of a traceback."""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from sentence_reduction.input_errors import find_input_error


@click.group(name="sentence-reduction")
def cli() -> None:
    """Commands of the sentence-reduction project."""


@cli.command(name="run", params=kedro_run.params, help=kedro_run.help)
@click.pass_context
def run(context: click.Context, **options: Any) -> Any:
    try:
        return context.invoke(kedro_run, **options)
    except Exception as error:
        input_error = find_input_error(error)
        if input_error is None:
            raise
        raise click.ClickException(str(input_error)) from None
