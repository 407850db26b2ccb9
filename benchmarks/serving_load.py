"""The served model under a bounded local load: `mlflow models serve` of a registered model, its latency
for one ruling and for a batch, its answers to bad requests, and its log lines per request.

Sequential requests from this one client (no concurrency: the figures are the server's own time):
``--requests`` of one ruling each (p50, p95, max), then ``--batch-requests`` of ``--batch`` rulings;
then each bad request below, whose status must be 4xx, with a good request answered after each. The
rulings are the rows of ``--rulings`` (id, fact), taken in turn. Prints one JSON object.

    python -m benchmarks.serving_load --model-uri models:/sentence-reduction/latest   # starts the server
    python -m benchmarks.serving_load --url http://127.0.0.1:5001                      # a running server

Started here, the server runs in the working folder (the project root, for its sqlite:///mlflow.db) with
``--env-manager local`` and stops at the end; its log lines per request are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def bad_requests(ruling: dict[str, str]) -> dict[str, bytes]:
    """Requests the server must refuse (4xx), by name: the body sent."""

    def records(*rows: dict) -> bytes:
        return json.dumps({"dataframe_records": list(rows)}, ensure_ascii=False).encode()

    long = ruling["fact"] * (1_000_000 // len(ruling["fact"]))
    return {
        "fact_number": records({"id": "bad", "fact": 12345}),
        "fact_list": records({"id": "bad", "fact": ["罪犯", "某"]}),
        "fact_empty": records({"id": "bad", "fact": " "}),
        "fact_missing": records({"id": "bad"}),
        "ruling_of_a_million_characters": records({"id": "bad", "fact": long}),
        "malformed_json": b'{"dataframe_records": [{"id": "bad", "fact": ',
        "five_thousand_rows": records(*({"id": f"bad_{i}", "fact": ruling["fact"]} for i in range(5000))),
    }


def post(url: str, body: bytes) -> tuple[int, dict, float]:
    """The status, the JSON answer and the seconds a request took."""
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        answer = json.loads(body)
    except ValueError:  # a server error's plain text
        answer = {"message": body.decode(errors="replace")}
    return status, answer, time.perf_counter() - started


def records_body(rulings: list[dict[str, str]]) -> bytes:
    return json.dumps({"dataframe_records": rulings}, ensure_ascii=False).encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(url: str, rulings: list[dict[str, str]], args: argparse.Namespace, log: Path | None) -> dict:
    lines = (lambda: len(log.read_text(errors="replace").splitlines())) if log else (lambda: 0)
    status, _, _ = post(url, records_body(rulings[:1]))  # the first request warms the process up
    if status != 200:
        raise SystemExit(f"the server answered a good request with HTTP {status}")
    before = lines()
    single = []
    for index in range(args.requests):
        status, _, seconds = post(url, records_body([rulings[index % len(rulings)]]))
        if status != 200:
            raise SystemExit(f"request {index}: HTTP {status}")
        single.append(seconds)
    log_lines_per_request = (lines() - before) / args.requests
    batch = []
    for index in range(args.batch_requests):
        start = (index * args.batch) % len(rulings)
        status, answer, seconds = post(url, records_body((rulings * 2)[start : start + args.batch]))
        if status != 200 or len(answer["predictions"]) != args.batch:
            raise SystemExit(f"batch request {index}: HTTP {status}")
        batch.append(seconds)
    refused = {}
    for name, body in bad_requests(rulings[0]).items():
        status, answer, _ = post(url, body)
        message = str(answer.get("message", "")).strip().splitlines()
        after, _, _ = post(url, records_body(rulings[:1]))
        refused[name] = {"status": status, "message": message[-1][:160] if message else "", "then_good": after}
    milliseconds = lambda seconds: round(1000 * seconds, 1)  # noqa: E731
    return {
        "one_ruling_ms": {
            "requests": args.requests,
            "p50": milliseconds(statistics.median(single)),
            "p95": milliseconds(percentile(single, 0.95)),
            "max": milliseconds(max(single)),
        },
        f"{args.batch}_rulings_ms": {
            "requests": args.batch_requests,
            "p50": milliseconds(statistics.median(batch)),
            "max": milliseconds(max(batch)),
        },
        "bad_requests": refused,
        "all_bad_requests_4xx": all(
            400 <= item["status"] < 500 and item["then_good"] == 200 for item in refused.values()
        ),
        "server_log_lines_per_request": log_lines_per_request if log else None,
    }


def start_server(model_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bin_folder = Path(sys.executable).parent
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        "PATH": f"{bin_folder}{os.pathsep}{os.environ.get('PATH', '')}",  # the server starts `uvicorn` by name
    }
    command = [str(bin_folder / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: it runs uvicorn in a child
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            stop(server)
            raise SystemExit(f"the server did not start:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5):
                return server, url
        except OSError:
            time.sleep(1)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-uri", help="start `mlflow models serve` of this model here (and stop it at the end)")
    where.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:5001")
    parser.add_argument("--rulings", default=str(ROOT / "data" / "01_raw" / "sample" / "testA.csv"))
    parser.add_argument("--requests", type=int, default=200, help="requests of one ruling")
    parser.add_argument("--batch", type=int, default=50, help="rulings in a batch request")
    parser.add_argument("--batch-requests", type=int, default=20)
    args = parser.parse_args(argv)
    rulings = pd.read_csv(args.rulings, dtype=str)[["id", "fact"]].to_dict("records")
    if args.url:
        print(json.dumps(measure(args.url.rstrip("/"), rulings, args, None), indent=2, ensure_ascii=False))
        return
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "server.log"
        server, url = start_server(args.model_uri, log)
        try:
            result = measure(url, rulings, args, log)
        finally:
            stop(server)
    print(json.dumps({"model_uri": args.model_uri, **result}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
