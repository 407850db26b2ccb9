"""The run's configuration environment for `pipeline_registry`, which Kedro calls without it."""

from __future__ import annotations

import os
from typing import Any

from kedro.framework.hooks import hook_impl


class ConfigEnvironmentHooks:
    """Hands the run's configuration environment (``kedro run --env``) to `register_pipelines`, which
    Kedro calls without it: the environment's `transformer_candidates` shape the pipelines."""

    @hook_impl(tryfirst=True)  # before any hook reads context.params, which builds the pipelines
    def after_context_created(self, context: Any) -> None:
        if context.env:
            os.environ["KEDRO_ENV"] = context.env
