"""Reference rows for docs/results.md: what the metrics give without a trained model.

What: on the IU X-ray test split (590 studies), (1) the most frequent cleaned train report written
for every study, (2) the nearest train report by phantom pixels (training/baselines.py). CE
micro-F1 on IU is dominated by "No Finding" (positive in ~43% of reports), so row (1) shows how
much of a model's CE score a constant normal report already earns.
Needs: the iu_phantom phantoms (`r2genkg train --config configs/iu_phantom.yaml` renders them).
Run:   .venv/bin/python scripts/reference_baselines.py [--out docs/ablation_runs/baselines.json]
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from cxr.clean import CleanStyle, clean_report
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen
from training.baselines import NearestReportBaseline
from training.evaluate import compute_scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=Path("outputs/phantoms/iu_128"))
    p.add_argument("--out", type=Path, default=Path("docs/ablation_runs/baselines.json"))
    args = p.parse_args()
    annotation = bundled_iu_annotation()
    train = read_r2gen(annotation, image_root=args.images, splits=["train"])
    test = read_r2gen(annotation, image_root=args.images, splits=["test"])
    refs = [r.report for r in test]
    constant, count = Counter(clean_report(r.report, CleanStyle.IU_XRAY) for r in train).most_common(1)[0]
    rows = {
        "most_frequent_train_report": [constant] * len(test),
        "nearest_train_report_by_pixels": NearestReportBaseline().fit(train).predict(test),
    }
    out: dict[str, object] = {"constant_report": constant, "constant_report_train_count": count}
    for name, preds in rows.items():
        scores = compute_scores(preds, refs, CleanStyle.IU_XRAY, meteor=True, clinical=True)
        out[name] = scores.flat()
        print(name, json.dumps({k: round(v, 4) for k, v in scores.flat().items()
                                if k in ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "CE14_micro_f1",
                                         "CE14_macro_f1", "CE5_micro_f1")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"constant report ({count} train studies): {constant!r}\nwrote {args.out}")


if __name__ == "__main__":
    main()
