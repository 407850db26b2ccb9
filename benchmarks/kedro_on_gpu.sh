#!/usr/bin/env bash
# `kedro run --pipelines=train --env erlangshen` on a GPU machine, as a user runs it: the 1.3B config
# (random weights), the real vocab.txt, rulings from the sample generator, 2 folds; the run is killed
# (SIGKILL) in megatron_bert.fold_1 once that fold has a checkpoint, then the same command runs again to the end.
# Prints the wall times, the MLflow runs in the store and the submission.
#   bash benchmarks/kedro_on_gpu.sh /path/to/vocab.txt [rows]
set -u
vocabulary=$(realpath "$1"); rows=${2:-1600}
project=/tmp/kedro_on_gpu; rm -rf "$project"; mkdir -p "$project"
cp -r pyproject.toml conf src "$project"/ && cd "$project" || exit 1
for layer in 01_raw 02_intermediate 03_primary 04_feature 05_model_input 06_models 07_model_output 08_reporting; do
  mkdir -p "data/$layer"; done
export PYTHONPATH="$project/src${PYTHONPATH:+:$PYTHONPATH}"  # the package, as `pip install -e .` would give it
python3 -m sentence_reduction.sample_data --output data/01_raw/gpu --n-train "$rows" --n-test $((rows / 4)) --seed 611 || exit 1
printf 'folds:\n  strategy: stratified_kfold\n  n_splits: 2\n  holdout_fraction: 0.01\n  seed: 42\n' > conf/erlangshen/parameters_gpu_check.yml
export KEDRO_ENV=erlangshen KEDRO_DISABLE_TELEMETRY=true
model=transformer_candidates.megatron_bert.model
params="raw_data_dir=data/01_raw/gpu,$model.config_path=${CONFIG:-$OLDPWD/benchmarks/erlangshen_config.json},$model.vocabulary_path=$vocabulary,training.arguments.num_train_epochs=1,training.arguments.logging_steps=5,training.checkpoint_every_minutes=${MINUTES:-0.25}"
run() { python3 -m kedro run --pipelines=train --env erlangshen --params "$params"; }
start=$(date +%s)
setsid bash -c "$(declare -f run); params='$params'; run" > first_run.log 2>&1 &
runner=$!
work=data/06_models/work/megatron_bert  # <candidate>/fold_<n>
until compgen -G "$work/fold_1/checkpoints/checkpoint-*/trainer_state.json" > /dev/null; do
  kill -0 $runner 2>/dev/null || { echo "first run ended before fold_1 had a checkpoint"; tail -40 first_run.log; exit 1; }
  sleep 2; done
kill -9 -- -$runner; wait $runner 2>/dev/null
echo "killed after $(( $(date +%s) - start )) s: $(ls $work/fold_1/checkpoints)"
again=$(date +%s)
run > second_run.log 2>&1; echo "second run rc=$? after $(( $(date +%s) - again )) s"
grep -E "not retraining|resuming from|FinalScore|megatron_bert.fold_[01]: loss" first_run.log second_run.log | cut -c1-300
python3 - <<'PY'
import pandas as pd
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
experiment = client.get_experiment_by_name("sentence-reduction")
for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"]):
    print(run.info.run_name, run.info.status, run.data.tags.get("mlflow.parentRunId", "")[:8],
          {k: round(v, 4) for k, v in run.data.metrics.items() if k.endswith("final_score")})
submission = pd.read_csv("data/07_model_output/submission.csv")
print("submission", submission.shape, list(submission.columns), submission["label"].value_counts().head(5).to_dict())
PY
