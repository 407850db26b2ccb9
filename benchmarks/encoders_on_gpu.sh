#!/usr/bin/env bash
# docs/encoders.md's table of encoders on real rulings, on a GPU machine: a transformer candidate fine-tuned
# out of fold on labelled rows (with the classical candidates and the nested ensemble, `real_rows`), as it
# is and after continued masked-LM pretraining on the same rows' texts (never their labels). Records go to
# $OUT/records.jsonl (`python -m benchmarks.records` logs them into MLflow afterwards).
#   bash benchmarks/encoders_on_gpu.sh ROWS.csv NAME MODEL [as_is] [pretrained] [wwm]
# MODEL: a pretrained folder (a *.safetensors.xz beside its files is unpacked first), or `bert6x512` for a
# BERT of 6 layers x 512 built from a config; `as_is` fine-tunes MODEL itself (not for bert6x512),
# `pretrained` pretrains it first, `wwm` pretrains with whole-word masking. Environment: LR, EPOCHS and
# BATCH of the fine-tuning; PRETRAIN_EPOCHS and PRETRAIN_LR of the pretraining; FINE_TUNE_PARAMS, more
# fine-tuning parameters (KEY=VALUE ...). Run from the repository root with the project importable
# (PYTHONPATH=src) and $OUT set.
set -u
rows=$1 name=$2 model=$3; shift 3
c=transformer_candidates.megatron_bert  # the candidate real_rows and the pretraining train
fine_tune="$c.model.max_length=512 $c.training.arguments.learning_rate=${LR:-2e-4}
  $c.training.arguments.num_train_epochs=${EPOCHS:-12} $c.training.arguments.per_device_train_batch_size=${BATCH:-32}
  $c.training.arguments.warmup_steps=0.1 $c.training.arguments.save_steps=100000 ${FINE_TUNE_PARAMS:-}"
pretrain="$c.model.max_length=512 pretraining.training.arguments.num_train_epochs=${PRETRAIN_EPOCHS:-40}
  pretraining.training.arguments.learning_rate=${PRETRAIN_LR:-1e-4} pretraining.training.arguments.per_device_train_batch_size=${BATCH:-32}
  pretraining.training.arguments.save_steps=100000 pretraining.training.arguments.eval_steps=500
  pretraining.training.arguments.logging_steps=100"
if [ "$model" = bert6x512 ]; then
  source_model="$c.model.architecture=bert $c.model.config.hidden_size=512 $c.model.config.num_hidden_layers=6
    $c.model.config.num_attention_heads=8 $c.model.config.intermediate_size=2048 $c.model.config.hidden_act=gelu"
else
  folder=$(mktemp -d /tmp/encoders_on_gpu.XXXX)/$name  # its own copy: several runs of one MODEL go side by side
  mkdir -p "$folder" && cp "$model"/* "$folder"/ || exit 1
  for packed in "$folder"/*.xz; do [ -e "$packed" ] && xz -df "$packed"; done
  source_model="$c.model.pretrained_path=$folder"
fi
for variant in "$@"; do
  started=$(date +%s)
  if [ "$variant" = as_is ]; then
    from="$source_model"
  else
    masking=$([ "$variant" = wwm ] && echo true || echo false)
    # shellcheck disable=SC2086  # the parameter lists are word-split on purpose
    python3 -m benchmarks.continued_pretraining "$rows" --out "/tmp/encoders_on_gpu/$name.$variant" \
      --run-name "$name $variant" --out-records "$OUT/records.jsonl" \
      --params $source_model $pretrain pretraining.whole_word_masking=$masking > "$OUT/$name.$variant.pretrain.log" 2>&1 \
      || { echo "$name $variant: pretraining failed"; tail -5 "$OUT/$name.$variant.pretrain.log"; continue; }
    from="$c.model.pretrained_path=/tmp/encoders_on_gpu/$name.$variant"
  fi
  # shellcheck disable=SC2086
  python3 -m benchmarks.real_rows "$rows" --transformer --run-name "$name $variant" --out "$OUT/records.jsonl" \
    --params $from $fine_tune > "$OUT/$name.$variant.log" 2>&1 || echo "$name $variant: fine-tuning failed"
  echo "== $name $variant ($(( $(date +%s) - started )) s)"; grep -E "megatron_bert|ensemble|wall time" "$OUT/$name.$variant.log"
done
