"""Fine-tuning of any BERT-family encoder for sequence classification (Erlangshen-MegatronBert-1.3B on
GPUs, a small MegatronBert or BERT built from a config on the CPU) over the folds, with the Hugging Face
Trainer and, for several processes, DeepSpeed. It knows nothing of Kedro: the train pipeline's nodes call it.

Its settings are dataclasses that hold every default and say what each field does: `TrainingSettings`
(with `InTrainingEvaluation` and `LauncherSettings`, in `arguments`) and `ModelSettings` (in `model`).
"""
