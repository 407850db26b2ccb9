"""The node tags that code outside the pipelines' wiring reads. A module of its own, free of the
pipelines' imports, so that the hooks (tracking.py) read the same names the pipelines set."""

# The nodes the train and predict pipelines share: `predict` is the train pipeline's nodes with this tag.
INFERENCE = "inference"
# A transformer candidate's fold training: tracking.py opens a nested MLflow run around each such node.
FOLD_TRAINING = "fold_training"
# A transformer candidate's continued pretraining: tracking.py opens a nested MLflow run around it too.
PRETRAINING = "pretraining"
