"""Training and scoring: datasets and batches (data.py), the accelerate loop with exact resume
(loop.py, logs.py), experiment configs (config.py), prediction over a dataset (predict.py), the
one home of scoring (evaluate.py over metrics/) and checkpoint evaluation (evaluate_checkpoint.py)."""
