"""sentence-reduction: predict the months of a sentence reduction (减刑) from the ruling's text."""

import logging
import re
import warnings

__version__ = "0.1.0"

# Warnings from third-party code that a user of this project can do nothing about, silenced here because
# Kedro imports the package before anything else of a `kedro` command runs (its plugins included). Each
# is matched by its message and the module it comes from, so that every other warning still shows.

# OmegaConf deprecates register_new_resolver, which Kedro's config loader and kedro-mlflow still call.
warnings.filterwarnings(
    "ignore",
    message=r"register_new_resolver\(\) is deprecated",
    category=UserWarning,
    module=r"(kedro\.config\.omegaconf_config|kedro_mlflow\.framework\.hooks\.mlflow_hook)",
)

# MLflow asks every PythonModel subclass for type hints; kedro-mlflow's KedroPipelineModel has none.
# MLflow raises this one under its own `simplefilter("once")`, which goes in front of any filter set
# here, so it is dropped where Kedro shows warnings instead: the `py.warnings` logger.
# Kedro 1.7 deprecates `kedro run --pipeline`, the spelling this project's users have typed for years; it
# still works and `--pipelines` is documented. Kedro's CLI imports this package inside a block that
# restores the warning filters afterwards, so this notice too is dropped at the `py.warnings` logger.
# And MLflow logs a caution against pickled models each time one is logged: kedro-mlflow's model is one
# by design (sentence_reduction/serving.py), so a user can do nothing about it.
_UNINFORMATIVE_LOG_RECORDS = {
    "py.warnings": (
        re.compile(
            r"mlflow[/\\]pyfunc[/\\]utils[/\\]data_validation\.py:\d+: "
            r"UserWarning: \W*\[\d+mAdd type hints to the `predict`"
        ),
        re.compile(
            r"kedro[/\\]framework[/\\]cli[/\\]project\.py:\d+: "
            r"KedroDeprecationWarning: Option '--pipeline' is deprecated"
        ),
    ),
    "mlflow.pyfunc": (
        re.compile(r"Passing a Python object as `python_model` causes it to be serialized using CloudPickle"),
    ),
    # DeepSpeed, imported by transformers on a machine without a GPU, where the project trains on the CPU
    # on purpose: "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
    "DeepSpeed": (re.compile(r"^Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable"),),
}


class _WithoutUninformativeRecord(logging.Filter):
    def __init__(self, messages: tuple[re.Pattern, ...]) -> None:
        super().__init__()
        self._messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.search(message) for pattern in self._messages)


for _logger_name, _messages in _UNINFORMATIVE_LOG_RECORDS.items():
    logging.getLogger(_logger_name).addFilter(_WithoutUninformativeRecord(_messages))
