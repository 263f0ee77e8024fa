"""graphdb/hierarchy.py: which M3KG entities express which CheXpert observation (EXPRESSES links)."""
from __future__ import annotations

import pytest

from cxr.labeler import ReportLabeler
from cxr.observations import Observation
from graphdb.hierarchy import observations_of
from graphdb.m3kg import load_m3kg


@pytest.mark.parametrize("term, observation", [
    ("effusion", Observation.PLEURAL_EFFUSION),
    ("defibrillator", Observation.SUPPORT_DEVICES),      # one rare word: a term, not a foreign report
    ("et tube", Observation.SUPPORT_DEVICES),
    ("carcinomatosis", Observation.LUNG_LESION),
    ("edemais", Observation.EDEMA),                      # a merged token of the mined reports
])
def test_an_entity_name_is_read_as_a_term(term: str, observation: Observation) -> None:
    assert observation in observations_of(term)


def test_the_language_check_still_blanks_a_foreign_report() -> None:
    labels = ReportLabeler().label("Herz vergrössert, Erguss beidseits, keine Stauung.")
    assert labels.unread is not None and all(v is None for v in labels.values.values())


def test_the_bundled_m3kg_links_the_terms_the_language_check_used_to_drop() -> None:
    links = {(link.entity, link.observation) for link in load_m3kg().links}
    names = {e.key: e.name for e in load_m3kg().entities}
    linked = {(names[k], o) for k, o in links}
    assert ("defibrillator", Observation.SUPPORT_DEVICES) in linked
    assert len(links) == 126   # as the main checkout's store, built before the language check, holds
