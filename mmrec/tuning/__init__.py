"""Hyper-parameter search on validation (`mmrec tune`): search spaces, the Optuna study, the
per-dataset parameter overlay it writes and the search report.

`spaces` and `params` are plain data (no Optuna); `mmrec.tuning.tune` is the only module that
imports Optuna, and only when a search runs.
"""
