"""The fine-tuning settings' dataclasses as the one source of defaults: every field says what it does, and
conf/base sets a field only where the project's default run differs from it; and the package's modules
import one another without a circle."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from sentence_reduction.config_loading import load_parameters
from sentence_reduction.finetune.arguments import InTrainingEvaluation, LauncherSettings, TrainingSettings
from sentence_reduction.finetune.model import ModelSettings
from tests.conftest import PROJECT_ROOT

SETTINGS = [TrainingSettings, InTrainingEvaluation, LauncherSettings, ModelSettings]
# Where conf/base's CPU default differs from a default, on purpose: a small model built from an inline
# config, a short text and a character vocabulary without singletons, for folds that take minutes on a CPU.
CPU_DEFAULT_CHOICES = {"config", "max_length", "vocabulary_min_frequency"}


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda settings: settings.__name__)
def test_every_settings_field_says_what_it_does(settings):
    undocumented = [item.name for item in dataclasses.fields(settings) if not item.metadata.get("help")]
    assert not undocumented


def test_conf_base_sets_no_field_of_the_settings_to_another_value_than_its_default():
    parameters = load_parameters(PROJECT_ROOT / "conf", "local", {})
    training = TrainingSettings.from_params(parameters["training"])
    # Hugging Face's own arguments are set in conf/base, the project's fields keep their defaults.
    assert training == TrainingSettings(arguments=training.arguments, gpu_arguments=training.gpu_arguments)
    defaults = ModelSettings()
    for name, candidate in parameters["transformer_candidates"].items():
        model = ModelSettings.from_params(candidate["model"])
        differing = {
            item.name for item in dataclasses.fields(model) if getattr(model, item.name) != getattr(defaults, item.name)
        }
        assert differing <= CPU_DEFAULT_CHOICES, name


def _imports(source: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``source`` imports anywhere in it (under TYPE_CHECKING and inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentence_reduction"):
            for alias in node.names:
                imported = f"{node.module}.{alias.name}"
                found.add(imported if imported in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("sentence_reduction")}
    return found & set(modules)


def test_no_module_of_the_package_imports_itself_through_others():
    src = PROJECT_ROOT / "src"
    modules = {
        ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (src / "sentence_reduction").rglob("*.py")
    }
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    circles, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not circles
