"""The project's measurements, each a thin script over the code it measures, run from the repository root as
``python -m benchmarks.<script>`` (with ``PYTHONPATH=src`` where the project is not installed).

CPU, on labelled rows: `real_rows` (every candidate and the ensemble out of fold), `held_back` (the whole
pipeline's submission on rows it held back). GPU: `train_throughput` (the training step of each path),
`fold_job` (a fold's phases), `prediction_throughput` (final predictions), `learning_check` (does a path
learn), `gpu_smoke` (the fold engine with and without DeepSpeed). Each result is a record, logged as an
MLflow run of the script's experiment (`records`). Shared: `parameters` (the project's parameters and the
training paths measured), `texts`, `profiling`, `kernels`.
"""
