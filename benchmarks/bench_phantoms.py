"""Phantom rendering speed on one core: images/s at 512×512 over the first 100 bundled IU studies.

Needs: nothing but the package. Run: ``.venv/bin/python benchmarks/bench_phantoms.py [--studies N]``.
Prints render-only and render+PNG rates, the 50 images/s target and their ratio, and beside them the
PNG-encoding-only cost and a naive baseline (full-resolution rendering, work_size = size).
"""
from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads

import time

from cxr.labeler import ReportLabeler
from cxr.phantom.generate import encode_png
from cxr.phantom.render import PhantomConfig, render_study
from cxr.phantom.spec import specs_from_report
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen

TARGET = 50.0  # images/s per core at 512×512


def _rate(studies, config: PhantomConfig, encode: bool) -> float:
    render_study([], "warm-up", config)  # fills the noise tile and vessel pool caches
    t0, images = time.perf_counter(), 0
    for study_id, specs in studies:
        for img in render_study(specs, study_id, config):
            if encode:
                encode_png(img, config.compress_level)
            images += 1
    return images / (time.perf_counter() - t0)


def _png_only(studies, config: PhantomConfig) -> float:
    imgs = [img for sid, specs in studies[:10] for img in render_study(specs, sid, config)]
    t0 = time.perf_counter()
    for _ in range(5):
        for img in imgs:
            encode_png(img, config.compress_level)
    return 5 * len(imgs) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    labeler = ReportLabeler()
    records = read_r2gen(bundled_iu_annotation())[: args.studies]
    studies = [(r.study_id, specs_from_report(r.report, labeler)) for r in records]
    config = PhantomConfig(size=args.size)

    render = _rate(studies, config, encode=False)
    full = _rate(studies, config, encode=True)
    png = _png_only(studies, config)
    naive = _rate(studies[:20], PhantomConfig(size=args.size, work_size=args.size), encode=True)
    print(f"phantoms, {len(studies)} IU studies × 2 views, {args.size}×{args.size}, 1 core")
    print(f"  render only          : {render:7.1f} images/s")
    print(f"  render + PNG encode  : {full:7.1f} images/s   target {TARGET:.0f}/s   ratio {full / TARGET:.2f}")
    print(f"  PNG encode only      : {png:7.1f} images/s   ({1000 / png:.1f} ms/image)")
    print(f"  naive full-res render: {naive:7.1f} images/s (work_size={args.size}, + PNG)")


if __name__ == "__main__":
    main()
