"""Benchmark: label all 2,955 bundled IU X-ray reports on one core.

What: reports/s of ``cxr.labeler.ReportLabeler`` against the 1,000 reports/s target, beside a
naive baseline (one ``re.search`` per phrase per sentence, CheXpert's substring matching, plus a
"no … before the phrase" negation check), then the label rates of each observation.
Needs: nothing but the repo. Run: ``.venv/bin/python benchmarks/bench_labeler.py``
"""
from __future__ import annotations

import json
import re
from importlib.resources import files

import numpy as np
from timing import best_rate

from cxr.labeler import ReportLabeler, format_rates, label_rates
from cxr.labeler.labeler import split_sentences
from cxr.labeler.phrases import chexpert_phrases

TARGET = 1000.0   # reports / s


def load_reports() -> list[str]:
    data = json.loads((files("cxr") / "resources" / "iu_xray" / "annotation.json").read_text())
    return [item["report"] for split in data.values() for item in split]


def naive_labeler():
    """Every phrase its own compiled regex, searched in every sentence."""
    mention, unmention = chexpert_phrases("mention"), chexpert_phrases("unmention")
    compiled = {o: [re.compile(re.escape(p.replace("_", " "))) for p in ps] for o, ps in mention.items()}
    un = {o: [re.compile(re.escape(p)) for p in ps] for o, ps in unmention.items()}
    negation = re.compile(r"\b(no|without|negative for|free of)\b")

    def label(report: str) -> dict:
        out = {}
        for sent in split_sentences(report):
            text = sent.text.lower()
            for obs, patterns in compiled.items():
                for pat in patterns:
                    m = pat.search(text)
                    if m and not any(u.search(text) for u in un[obs]):
                        value = 0.0 if negation.search(text[: m.start()]) else 1.0
                        out[obs] = max(out.get(obs, value), value)
        return out

    return label


def main() -> None:
    reports = load_reports()
    labeler = ReportLabeler()
    labeler.label(reports[0])   # build the matchers outside the timing
    ours = best_rate(labeler.label, reports)
    naive = best_rate(naive_labeler(), reports)
    print(f"reports: {len(reports)} (bundled IU X-ray), one core, best of 3")
    print(f"ReportLabeler : {ours:8.0f} reports/s   target {TARGET:.0f}/s   ratio {ours / TARGET:.2f}x")
    print(f"naive baseline: {naive:8.0f} reports/s   (one re.search per phrase per sentence)")
    print(f"speed-up over baseline: {ours / naive:.1f}x\n")
    labels = np.stack([labeler.label(r).as_array() for r in reports])
    print(format_rates(label_rates(labels)))


if __name__ == "__main__":
    main()
