"""Each measurement as an MLflow run: the record every benchmark writes, and its import into an MLflow store.

A record is one JSON object on a line:

    {"experiment": "benchmarks.<script>", "run_name": str,
     "params": {str: str | int | float | bool}, "metrics": {str: float},
     "tags": {"commit": str, "card": str, "date": "YYYY-MM-DD", "command": str, ...more str tags}}

A script appends its records to its ``--out`` file, prints each on stdout (``RECORD {...}``), and logs each
as a run of its experiment when mlflow is importable and its store usable: ``MLFLOW_TRACKING_URI``, else
the project's ``sqlite:///mlflow.db`` at the repository root (``make mlflow-ui`` shows it). Records written
where mlflow is missing (the GPU machine) are logged afterwards; a record already in the store (the same
experiment, run name and content) is not logged again:

    python -m benchmarks.records results.jsonl [more.jsonl ...]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("experiment", "run_name", "params", "metrics", "tags")
REQUIRED_TAGS = ("commit", "card", "date", "command")
HASH_TAG = "record_sha256"  # the record's content, which the import compares
# MLflow's limits on a parameter's and a tag's value (mlflow/utils/validation.py)
PARAM_LENGTH, TAG_LENGTH = 6000, 8000


def record(
    experiment: str, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, Any], tags: Mapping[str, Any]
) -> dict[str, Any]:
    """A record of these values: parameters as str, int, float or bool (None as "none", lists and dicts as
    JSON), metrics as floats (None left out), tags as str; each cut to MLflow's length limits."""
    return {
        "experiment": experiment,
        "run_name": run_name,
        "params": {key: _param(value) for key, value in params.items()},
        "metrics": {key: float(value) for key, value in metrics.items() if value is not None},
        "tags": {key: _text(value)[:TAG_LENGTH] for key, value in tags.items() if value is not None},
    }


def _param(value: Any) -> str | int | float | bool:
    if value is None:
        return "none"
    if isinstance(value, (bool, int, float, str)):
        return value if not isinstance(value, str) else value[:PARAM_LENGTH]
    if hasattr(value, "item"):  # a numpy scalar
        return value.item()
    return _text(value)[:PARAM_LENGTH]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


class Recorder:
    """A script's records: appended to ``out`` (when given), printed, and logged into MLflow when
    ``to_mlflow`` and mlflow is usable (else said once, on stderr)."""

    def __init__(self, experiment: str, command: str, out: str | Path | None = None, to_mlflow: bool = True):
        self.experiment = experiment
        self.out = Path(out) if out else None
        self.to_mlflow = to_mlflow
        self.tags = {**machine_tags(), "command": command}

    def log(
        self,
        run_name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        tags: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Writes the record of one run (the machine's tags with ``tags`` over them) and returns it."""
        written = record(self.experiment, run_name, params, metrics, {**self.tags, **(tags or {})})
        line = json.dumps(written, sort_keys=True, ensure_ascii=False)
        print("RECORD " + line, flush=True)
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with open(self.out, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        if self.to_mlflow:
            self.to_mlflow = log_to_mlflow([written], quiet=True) is not None
        return written


def command_line(module: str, argv: Iterable[str]) -> str:
    """How the script was run, as one would type it from the repository root."""
    return shlex.join(["python", "-m", module, *argv])


def machine_tags() -> dict[str, str]:
    """The commit, the card, today's date (UTC) and the versions of torch, CUDA and cuDNN."""
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    return {"commit": commit(), **card(), "date": today, **torch_versions()}


def torch_versions() -> dict[str, str]:
    try:
        import torch
    except ImportError:
        return {}
    return {"torch": torch.__version__, "cuda": str(torch.version.cuda), "cudnn": str(torch.backends.cudnn.version())}


def commit() -> str:
    """``BENCHMARK_COMMIT`` when set (a copy of the tree without its git folder, as a GPU machine gets), else
    ``git describe --always --dirty`` of the repository, else "unknown"."""
    if os.environ.get("BENCHMARK_COMMIT"):
        return os.environ["BENCHMARK_COMMIT"]
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() if described.returncode == 0 else "unknown"


def card() -> dict[str, str]:
    """The first GPU's name (``card``), with how many the machine has, its serial, driver and power limit,
    from nvidia-smi (which starts no CUDA context); "cpu: <model> (<n> cores)" where there is none."""
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,serial,driver_version,power.limit", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        listed = ""
    if not listed:
        return {"card": f"cpu: {_processor()} ({os.cpu_count()} cores)"}
    gpus = listed.splitlines()
    name, serial, driver, power = (field.strip() for field in gpus[0].split(","))
    return {"card": name, "gpus": str(len(gpus)), "card_serial": serial, "driver": driver, "power_limit": power}


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(errors="replace"), re.MULTILINE)
        if found:
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line that is not one stops with one line naming the file, the line
    and the field."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"{path}:{number}: not JSON ({error.msg})") from None
        problem = _problem(value)
        if problem:
            raise SystemExit(f"{path}:{number}: {problem}")
        records.append(value)
    return records


def _problem(value: Any) -> str | None:
    """What makes ``value`` no record, or None."""
    if not isinstance(value, dict) or set(value) != set(FIELDS):
        keys = sorted(value) if isinstance(value, dict) else type(value).__name__
        return f"a record has exactly the fields {', '.join(FIELDS)}, not {keys}"
    for field in ("experiment", "run_name"):
        if not isinstance(value[field], str) or not value[field]:
            return f"{field}: not a non-empty string"
    kinds = {"params": (str, int, float, bool), "metrics": (int, float), "tags": (str,)}
    for field, allowed in kinds.items():
        if not isinstance(value[field], dict):
            return f"{field}: not an object"
        for key, item in value[field].items():
            if not isinstance(item, allowed) or (field == "metrics" and isinstance(item, bool)):
                return f"{field}.{key}: {item!r} is not a {' or '.join(kind.__name__ for kind in allowed)}"
    for tag in REQUIRED_TAGS:
        if tag not in value["tags"]:
            return f"tags.{tag}: missing"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value["tags"]["date"]):
        return f"tags.date: {value['tags']['date']!r} is not YYYY-MM-DD"
    return None


def content_hash(written: Mapping[str, Any]) -> str:
    """The record's content as one hash (its own hash tag left out)."""
    tags = {key: value for key, value in written["tags"].items() if key != HASH_TAG}
    payload = json.dumps({**written, "tags": tags}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def log_to_mlflow(records: Iterable[Mapping[str, Any]], quiet: bool = False) -> tuple[int, int] | None:
    """Each record as a finished run of its experiment, unless a run of that name with the same content hash
    is there already. Returns (logged, already there), or None where mlflow is missing or its store fails
    (said on stderr; the records stay in their file)."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        print("mlflow is not installed: records kept in their file only (benchmarks.records logs it)", file=sys.stderr)
        return None
    logged = present = 0
    try:
        client = MlflowClient(tracking_uri=tracking_uri())
        for written in records:
            digest = content_hash(written)
            experiment = client.get_experiment_by_name(written["experiment"])
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(written["experiment"])
            found = client.search_runs([experiment_id], filter_string=f"tags.{HASH_TAG} = '{digest}'")
            if any(run.info.run_name == written["run_name"] for run in found):
                present += 1
                continue
            run = client.create_run(experiment_id, run_name=written["run_name"])
            timestamp = run.info.start_time
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(key, float(value), timestamp, 0) for key, value in written["metrics"].items()],
                params=[Param(key, str(value)) for key, value in written["params"].items()],
                tags=[RunTag(key, value) for key, value in {**written["tags"], HASH_TAG: digest}.items()],
            )
            client.set_terminated(run.info.run_id)
            logged += 1
    except Exception as error:  # a store that cannot be reached or written: the file keeps the records
        print(f"MLflow store {tracking_uri()}: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return None
    if not quiet:
        print(f"{tracking_uri()}: {logged} runs logged, {present} already there")
    return logged, present


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="JSON-lines files of records")
    arguments = parser.parse_args(argv)
    records = [written for path in arguments.files for written in read_records(path)]  # all checked first
    if log_to_mlflow(records) is None:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
