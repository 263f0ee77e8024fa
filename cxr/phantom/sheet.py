"""Contact sheet: one real IU report per observation (+ a few normals) → frontal + lateral phantoms, captioned.

``choose_examples(annotation, labeler)`` picks, for each observation, the first report in file order
that is positive for it with the fewest other findings; ``make_contact_sheet(...)`` draws the grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from cxr.observations import Observation
from cxr.phantom.generate import default_labeler
from cxr.phantom.render import PhantomConfig, render_study
from cxr.phantom.spec import (
    Certainty,
    FindingSpec,
    Labeler,
    Laterality,
    Severity,
    specs_from_report,
)
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen

_SHORT = {Laterality.LEFT: "L", Laterality.RIGHT: "R", Laterality.BILATERAL: "bilat"}


@dataclass(frozen=True)
class Example:
    caption: str
    study_id: str
    specs: tuple[FindingSpec, ...]


def describe(spec: FindingSpec) -> str:
    words = [_SHORT[spec.laterality]] if spec.laterality in _SHORT else []
    if spec.severity is not Severity.UNSPECIFIED:
        words.append(spec.severity.value)
    if spec.certainty is Certainty.UNCERTAIN:
        words.append("?")
    return spec.observation.value + (f" ({', '.join(words)})" if words else "")


def choose_examples(annotation: Path, labeler: Labeler, normals: int = 4) -> list[Example]:
    """One example per observation (the No Finding slot takes ``normals`` different normals)."""
    best: dict[Observation, tuple[int, Example]] = {}
    normal_examples: list[Example] = []
    for rec in read_r2gen(annotation):
        specs = tuple(specs_from_report(rec.report, labeler))
        present = [s for s in specs if s.certainty is Certainty.PRESENT]
        if any(s.observation is Observation.NO_FINDING for s in present) and len(normal_examples) < normals:
            normal_examples.append(Example(f"No Finding · {rec.study_id}", rec.study_id, specs))
            continue
        for spec in present:
            if spec.observation is Observation.NO_FINDING:
                continue
            others = len(specs) - 1
            if spec.observation not in best or others < best[spec.observation][0]:
                best[spec.observation] = (others, Example(f"{describe(spec)} · {rec.study_id}", rec.study_id, specs))
    chosen = [best[o][1] for o in Observation if o in best]
    return normal_examples[:1] + chosen + normal_examples[1:]


def make_contact_sheet(out: Path, annotation: Path | None = None, labeler: Labeler | None = None,
                       config: PhantomConfig | None = None, tile: int = 200, columns: int = 3) -> Path:
    """Render the examples (frontal | lateral per cell) into one captioned PNG at ``out``."""
    config = config or PhantomConfig()
    examples = choose_examples(annotation or bundled_iu_annotation(), labeler or default_labeler())
    caption_h, gap = 16, 6
    cell_w, cell_h = 2 * tile + gap, tile + caption_h
    rows = (len(examples) + columns - 1) // columns
    sheet = Image.new("L", (columns * cell_w + (columns - 1) * gap * 2, rows * (cell_h + gap)), 24)
    draw = ImageDraw.Draw(sheet)
    for k, ex in enumerate(examples):
        x0 = (k % columns) * (cell_w + 2 * gap)
        y0 = (k // columns) * (cell_h + gap)
        frontal, lateral = render_study(ex.specs, ex.study_id, config, n_views=2)
        for j, img in enumerate((frontal, lateral)):
            small = Image.fromarray(img).resize((tile, tile), Image.LANCZOS)
            sheet.paste(small, (x0 + j * (tile + gap), y0 + caption_h))
        draw.text((x0 + 2, y0 + 2), ex.caption[:70], fill=235)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG", optimize=True)
    return out


def main() -> None:
    """Regenerate ``docs/phantoms_contact_sheet.png`` (same as ``r2genkg phantoms-sheet``)."""
    print(make_contact_sheet(Path("docs/phantoms_contact_sheet.png")))


if __name__ == "__main__":
    main()
