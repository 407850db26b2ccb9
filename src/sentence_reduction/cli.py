"""Project command line: Kedro's own `run`, with bad input and every other `OneLineError` (a file the
project wrote that does not load, a full disk, a project another run holds), and a full disk a library
met, reported as one line instead of a traceback."""

from __future__ import annotations

from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

from sentence_reduction.atomic import unguarded_disk_full_error
from sentence_reduction.input_errors import OneLineError, find_error


@click.group(name="sentence-reduction")
def cli() -> None:
    """Commands of the sentence-reduction project."""


@cli.command(name="run", params=kedro_run.params, help=kedro_run.help)
@click.pass_context
def run(context: click.Context, **options: Any) -> Any:
    try:
        return context.invoke(kedro_run, **options)
    except Exception as error:
        one_line = find_error(error, OneLineError) or unguarded_disk_full_error(error)
        if one_line is None:
            raise
        raise click.ClickException(str(one_line)) from None
