"""Give a checkpoint's disease-token bank the reports its tokens came from (banks saved before
2026-12-05 lack them), so that per-sentence evidence can quote the training sentence of each
retrieved token (generator/explain.py). The reports are read from the checkpoint's own train split.

Needs: the checkpoint and its dataset's annotation (e.g. the bundled IU X-ray one).
Run: ``.venv/bin/python scripts/bank_reports.py outputs/runs/debug/best``
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cxr.datasets import load_split
from generator.checkpoint import BANK_DIR, read_config_data
from generator.config_io import from_dict
from retrieval.index import TokenIndex
from training.config import ExperimentConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    args = ap.parse_args()
    bank_dir = args.checkpoint / BANK_DIR
    if not bank_dir.is_dir():
        raise SystemExit(f"error: {args.checkpoint} has no {BANK_DIR}/ (a model without disease tokens)")
    bank = TokenIndex.load(bank_dir)
    config = from_dict(ExperimentConfig, read_config_data(args.checkpoint))
    wanted = set(bank.meta.study_ids.tolist())
    bank.reports = {r.study_id: r.report for r in load_split(config.data, "train") if r.study_id in wanted}
    missing = len(wanted) - len(bank.reports)
    bank.save(bank_dir)
    print(f"{bank_dir}: reports of {len(bank.reports)} of the {len(wanted)} studies its tokens came from"
          + (f" ({missing} not in the train split)" if missing else ""))


if __name__ == "__main__":
    main()
