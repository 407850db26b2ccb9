#!/usr/bin/env bash
# Gathers into .whl/ the wheels a GPU machine needs beyond its image: the Kedro stack, mlflow,
# transformers/accelerate at the project's pins, and DeepSpeed built here without its CUDA ops
# (DS_BUILD_OPS=0; they are JIT-built on the GPU machine). The versions are those of the project's
# venv (make install), less what the image already holds (KINDS.md "Python packages already there",
# passed as the first argument, comma-separated) and torch; the set stays under the 64 MiB a device
# call may carry. Run from the repository root:
#   bash benchmarks/device_wheels.sh "$(sed -n 's/.*Packages: //p' /path/to/KINDS.md)"
# and on the device: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
set -eu
target=.whl; rm -rf "$target"; mkdir -p "$target"
.venv/bin/python benchmarks/device_requirements.py "$1" > "$target/requirements.txt"
platforms=(); for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64"); done
grep -v '^deepspeed==' "$target/requirements.txt" | .venv/bin/python -m pip download --quiet --no-deps \
  --dest "$target" --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -r /dev/stdin
DS_BUILD_OPS=0 .venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$target" \
  "$(grep '^deepspeed==' "$target/requirements.txt")"
du -sh "$target"; ls "$target"/*.whl | wc -l
