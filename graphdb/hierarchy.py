"""The coarse, disease level of the graph: which entities express which of the 14 observations.

Entity names (and aliases) → ObservationLink, decided by the project's CheXpert-style labeler,
so the KG's disease layer and the model's labels use the same vocabulary.
"""
from __future__ import annotations

from collections.abc import Iterable

from cxr.labeler import ReportLabeler
from cxr.observations import POSITIVE, UNCERTAIN, Observation
from graphdb.schema import Entity, ObservationLink, normalize

# CheXpert has no mention list for No Finding (its "no_finding" list holds *other* findings),
# so the entities that express a normal study are named here.
NO_FINDING_NAMES = frozenset({"normal", "unremarkable", "no acute cardiopulmonary abnormality",
                              "no acute cardiopulmonary disease", "no acute disease"})


def observations_of(text: str, labeler: ReportLabeler | None = None) -> tuple[Observation, ...]:
    """Observations a bare entity string expresses ("effusion" → Pleural Effusion)."""
    if normalize(text) in NO_FINDING_NAMES:
        return (Observation.NO_FINDING,)
    labels = (labeler or ReportLabeler()).label(text, check_language=False).values   # a term, not a report
    return tuple(o for o, v in labels.items()
                 if o is not Observation.NO_FINDING and v in (POSITIVE, UNCERTAIN))


def observation_links(entities: Iterable[Entity]) -> list[ObservationLink]:
    """EXPRESSES links for every entity whose name or any alias names an observation.

    Sorted by (entity key, observation order), one link per pair.
    """
    labeler = ReportLabeler()
    cache: dict[str, tuple[Observation, ...]] = {}
    links: set[ObservationLink] = set()
    for entity in entities:
        for text in (entity.name, *entity.aliases):
            if text not in cache:
                cache[text] = observations_of(text, labeler)
            links.update(ObservationLink(entity.key, o) for o in cache[text])
    order = {o: i for i, o in enumerate(Observation)}
    return sorted(links, key=lambda link: (link.entity, order[link.observation]))
