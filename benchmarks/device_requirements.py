"""The pinned packages a GPU machine must be given: the project's GPU-side dependencies and all they
need, at the versions installed in this venv, less what the machine's image already holds.

    python benchmarks/device_requirements.py "absl-py, accelerate, ..." > requirements.txt

The argument is the image's package list (KINDS.md, "Python packages already there"). transformers
and accelerate are kept even so: the project pins other versions than the image's. torch and the
NVIDIA libraries are never listed (a CUDA build cannot be carried).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.requirements import Requirement

ROOTS = {
    "kedro": set(),
    "kedro-datasets": {"pandas-csvdataset", "pandas-parquetdataset", "json-jsondataset"},
    "kedro-mlflow": set(),
    "mlflow": set(),
    "transformers": set(),
    "accelerate": set(),
    "scikit-learn": set(),
    "deepspeed": set(),
}
KEEP_EVEN_IF_IN_IMAGE = {"transformers", "accelerate"}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(roots: dict[str, set[str]]) -> dict[str, str]:
    """Every installed distribution that ``roots`` (name -> extras) need, name -> installed version."""
    installed = {normalised(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    versions: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(normalised(name), extras) for name, extras in roots.items()]
    while pending:
        name, extras = pending.pop()
        if (name, frozenset(extras)) in visited:
            continue
        visited.add((name, frozenset(extras)))
        if name not in installed:
            raise SystemExit(f"{name} is needed but not installed in this venv: run make install first")
        versions[name] = installed[name].version
        for line in installed[name].requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in extras or {""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            pending.append((normalised(requirement.name), set(requirement.extras)))
    return versions


def main(image_packages: str) -> None:
    listed = {normalised(name.strip(" .")) for name in image_packages.split(",") if name.strip()}
    in_image = listed - KEEP_EVEN_IF_IN_IMAGE
    for name, version in sorted(dependency_closure(ROOTS).items()):
        if name not in in_image and name != "torch" and not name.startswith("nvidia-"):
            print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1])
