"""`r2genkg phantoms` and `r2genkg phantoms-sheet`: procedural chest X-rays drawn from real report labels.

`phantoms` writes a PNG at every ``image_path`` of an R2Gen annotation (frontal 0.png, lateral 1.png),
so the normal R2Gen reader loads them unchanged; `phantoms-sheet` draws the captioned contact sheet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("phantoms")
    def phantoms(
        out: Annotated[Path, typer.Option("--out", help="Output image root (the R2Gen image_dir).")],
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        size: Annotated[int, typer.Option(help="Image side in pixels.")] = 512,
        seed: Annotated[int, typer.Option(help="Seed; with the study id it fixes every pixel.")] = 0,
        limit: Annotated[int | None, typer.Option(help="Only the first N studies.")] = None,
        split: Annotated[list[str] | None, typer.Option(help="Split(s) to render (repeatable); default all.")] = None,
        workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
        overwrite: Annotated[bool, typer.Option(help="Re-render studies whose images exist; replace the manifest.")] = False,
    ) -> None:
        """Render phantom frontal + lateral X-rays for every study of an R2Gen annotation (resumable)."""
        from cxr.phantom.generate import generate_phantoms
        from cxr.phantom.render import PhantomConfig
        from cxr.readers.r2gen import bundled_iu_annotation

        config = PhantomConfig(size=size, seed=seed)
        summary = generate_phantoms(annotation or bundled_iu_annotation(), out, config, splits=split,
                                    limit=limit, overwrite=overwrite, workers=workers)
        typer.echo(str(summary))

    @app.command("phantoms-sheet")
    def phantoms_sheet(
        out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("docs/phantoms_contact_sheet.png"),
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        seed: Annotated[int, typer.Option(help="Seed of the phantoms.")] = 0,
    ) -> None:
        """Draw a contact sheet: one real report per observation plus normals, frontal | lateral, captioned."""
        from cxr.phantom.render import PhantomConfig
        from cxr.phantom.sheet import make_contact_sheet

        path = make_contact_sheet(out, annotation=annotation, config=PhantomConfig(seed=seed))
        typer.echo(f"wrote {path}")
