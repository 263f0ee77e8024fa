"""The rule extractor on real IU X-ray sentences, expected entities / certainties / triples written
by hand; the dictionary's build rules; determinism; the IU train graph; comparison with M3KG.

Every sentence below is copied verbatim from ``cxr/resources/iu_xray/annotation.json`` (checked).
Triples are (head text, relation, tail text) as written, lower-cased; the sets are complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr.labeler import split_sentences
from cxr.readers import read_r2gen
from cxr.records import DataError, StudyRecord
from graphdb.accumulate import GraphAccumulator, study_node
from graphdb.compare import compare_graphs
from graphdb.extract import Extractor, RuleConfig, RuleExtractor
from graphdb.schema import (
    Certainty,
    Entity,
    EntityType,
    KnowledgeGraph,
    Relation,
    Triple,
)
from graphdb.vocabulary import STOP_ALIASES, DictEntry, EntityDictionary, alias_words

P, A, U = Certainty.PRESENT, Certainty.ABSENT, Certainty.UNCERTAIN
MOD, LOC, SUG = "modify", "located_at", "suggestive_of"

CASES: list[tuple[str, dict[str, Certainty], set[tuple[str, str, str]]]] = [
    # --- modifiers: size → head noun, laterality → the anatomy it names ----------------------
    ("Small left pleural effusion.",
     {"small": P, "left": P, "pleural": P, "effusion": P},
     {("small", MOD, "effusion"), ("left", MOD, "pleural"), ("effusion", LOC, "pleural")}),
    ("Stable mild cardiomegaly.",
     {"stable": P, "mild": P, "cardiomegaly": P},
     {("stable", MOD, "cardiomegaly"), ("mild", MOD, "cardiomegaly")}),
    ("Small hiatal hernia.",
     {"small": P, "hiatal": P, "hernia": P},
     {("small", MOD, "hernia"), ("hernia", LOC, "hiatal")}),
    ("Large left lower lobe opacity is present.",
     {"large": P, "left": P, "lower": P, "lobe": P, "opacity": P},
     {("large", MOD, "opacity"), ("left", MOD, "lobe"), ("lower", MOD, "lobe"), ("opacity", LOC, "lobe")}),
    ("Old right-sided rib fracture is noted.",
     {"old": P, "right-sided": P, "rib": P, "fracture": P},
     {("old", MOD, "fracture"), ("right-sided", MOD, "rib"), ("fracture", LOC, "rib")}),
    # --- predicates: "X is ADJ", also verbless "Heart size normal." ------------------------------
    ("The heart is mildly enlarged.",
     {"heart": P, "mildly": P, "enlarged": P},
     {("enlarged", MOD, "heart"), ("mildly", MOD, "enlarged")}),
    ("The aorta is tortuous and ectatic.",
     {"aorta": P, "tortuous": P, "ectatic": P},
     {("tortuous", MOD, "aorta"), ("ectatic", MOD, "aorta")}),
    ("Both lungs are clear and expanded.",
     {"both": P, "lungs": P, "clear": P, "expanded": P},
     {("both", MOD, "lungs"), ("clear", MOD, "lungs"), ("expanded", MOD, "lungs")}),
    ("Heart size normal.",
     {"heart": P, "size": P, "normal": P},
     {("normal", MOD, "size"), ("size", LOC, "heart")}),
    ("The heart size is normal.",
     {"heart": P, "size": P, "normal": P},
     {("normal", MOD, "size"), ("size", LOC, "heart")}),
    # --- location phrases ------------------------------------------------------------------------
    ("Calcified granuloma in the left lower lobe.",
     {"calcified": P, "granuloma": P, "left": P, "lower": P, "lobe": P},
     {("calcified", MOD, "granuloma"), ("left", MOD, "lobe"), ("lower", MOD, "lobe"), ("granuloma", LOC, "lobe")}),
    ("There is a calcified granuloma at the left lung base.",
     {"calcified": P, "granuloma": P, "left": P, "lung": P, "base": P},
     {("calcified", MOD, "granuloma"), ("left", MOD, "lung"), ("base", LOC, "lung"), ("granuloma", LOC, "base")}),
    ("Degenerative changes are present in the spine.",          # longest match: one entity
     {"degenerative changes": P, "spine": P},
     {("degenerative changes", LOC, "spine")}),
    ("Left lower lobe airspace disease, XXXX atelectasis.",
     {"left": P, "lower": P, "lobe": P, "airspace": P, "disease": P, "atelectasis": P},
     {("left", MOD, "lobe"), ("lower", MOD, "lobe"), ("disease", LOC, "lobe"), ("disease", LOC, "airspace")}),
    ("The presence of an aortic aneurysm cannot be excluded on this study XXXX.",
     {"presence": U, "aortic": U, "aneurysm": U, "study": P},
     {("aneurysm", LOC, "aortic")}),                           # "of" + a disorder is no location
    # --- suggestive_of ---------------------------------------------------------------------------
    ("The lungs are hyperexpanded, consistent with COPD.",
     {"lungs": P, "hyperexpanded": P, "copd": P},
     {("hyperexpanded", MOD, "lungs"), ("hyperexpanded", SUG, "copd")}),
    ("The lungs appear hyperexpanded suggesting emphysema.",
     {"lungs": P, "hyperexpanded": P, "emphysema": U},
     {("hyperexpanded", MOD, "lungs"), ("hyperexpanded", SUG, "emphysema")}),
    ("The streaky opacities in the lung bases may represent atelectasis.",
     {"streaky": P, "opacities": P, "lung": P, "bases": P, "atelectasis": U},
     {("streaky", MOD, "opacities"), ("bases", LOC, "lung"), ("opacities", LOC, "bases"),
      ("opacities", SUG, "atelectasis")}),
    ("Stable XXXX densities in the left base compatible with scarring or chronic subsegmental atelectasis.",
     {"stable": P, "densities": P, "left": P, "base": P, "scarring": P, "chronic": P, "subsegmental": P,
      "atelectasis": P},
     {("left", MOD, "base"), ("densities", LOC, "base"), ("chronic", MOD, "atelectasis"),
      ("subsegmental", MOD, "atelectasis"), ("densities", SUG, "scarring"), ("densities", SUG, "atelectasis")}),
    ("Mediastinal calcification and dense right upper lung nodule suggest a previous granulomatous process.",
     {"mediastinal": P, "calcification": P, "dense": P, "right": P, "upper": P, "lung": P, "nodule": P,
      "previous": U, "granulomatous": U, "process": U},
     {("calcification", LOC, "mediastinal"), ("dense", MOD, "nodule"), ("right", MOD, "lung"),
      ("upper", MOD, "lung"), ("nodule", LOC, "lung"), ("previous", MOD, "process"),
      ("granulomatous", MOD, "process"), ("nodule", SUG, "process")}),
    ("Hyperexpanded lungs consistent with chronic obstructive pulmonary disease.",   # longest match
     {"hyperexpanded": P, "lungs": P, "chronic obstructive pulmonary disease": P},
     {("hyperexpanded", MOD, "lungs"), ("hyperexpanded", SUG, "chronic obstructive pulmonary disease")}),
    # --- negation and uncertainty: relations of absent mentions are kept -------------------------
    ("No pneumothorax or pleural effusion is seen.",
     {"pneumothorax": A, "pleural": A, "effusion": A},
     {("effusion", LOC, "pleural")}),
    ("The lungs are free of focal airspace disease.",          # "free of" is the cue, no entity
     {"lungs": P, "focal": A, "airspace": A, "disease": A},
     {("focal", MOD, "disease"), ("disease", LOC, "airspace")}),
    ("There is no focal air space opacity to suggest a pneumonia.",
     {"focal": A, "air": A, "space": A, "opacity": A, "pneumonia": A},
     {("focal", MOD, "opacity"), ("opacity", LOC, "air"), ("opacity", LOC, "space"),
      ("opacity", SUG, "pneumonia")}),
    ("The left apical pneumothorax has resolved.",
     {"left": A, "apical": A, "pneumothorax": A, "resolved": P},
     {("left", MOD, "apical"), ("pneumothorax", LOC, "apical")}),
    ("Possible right shoulder calcific tendinitis.",
     {"right": U, "shoulder": U, "calcific": U, "tendinitis": U},
     {("right", MOD, "shoulder"), ("tendinitis", LOC, "shoulder"), ("calcific", MOD, "tendinitis")}),
    ("Interval removal of left-sided chest tube.",             # "removal of" is the cue
     {"interval": P, "left-sided": A, "chest": A, "tube": A},
     {("left-sided", MOD, "chest"), ("tube", LOC, "chest")}),
    # --- XXXX is never an entity and breaks adjacency -------------------------------------------
    ("Mild perihilar XXXX opacities, XXXX edema.",
     {"mild": P, "perihilar": P, "opacities": P, "edema": P},
     {("mild", MOD, "perihilar")}),
    ("XXXX opacities in the left lung base consistent with atelectasis.",
     {"opacities": P, "left": P, "lung": P, "base": P, "atelectasis": P},
     {("left", MOD, "lung"), ("base", LOC, "lung"), ("opacities", LOC, "base"), ("opacities", SUG, "atelectasis")}),
    ("Right basilar XXXX opacity may represent atelectasis.",
     {"right": P, "basilar": P, "opacity": P, "atelectasis": U},
     {("right", MOD, "basilar"), ("opacity", SUG, "atelectasis")}),
    ("Blunting of the left costophrenic XXXX.",
     {"blunting": P, "left": P, "costophrenic": P},
     {("left", MOD, "costophrenic"), ("blunting", LOC, "costophrenic")}),
    ("Right PICC line is in XXXX.",                            # longest match: "picc line"
     {"right": P, "picc line": P},
     {("right", MOD, "picc line")}),
]


@pytest.fixture(scope="module")
def extractor() -> RuleExtractor:
    return RuleExtractor()


@pytest.fixture(scope="module")
def iu_records(iu_annotation: Path) -> list[StudyRecord]:
    return read_r2gen(iu_annotation, splits=["train"])


def test_cases_are_real_iu_sentences(iu_annotation: Path) -> None:
    data = json.loads(iu_annotation.read_text())
    sentences = {s.text for split in data.values() for item in split for s in split_sentences(item["report"])}
    missing = [text for text, _, _ in CASES if text not in sentences]
    assert not missing


@pytest.mark.parametrize(("text", "entities", "triples"), CASES, ids=[c[0][:40] for c in CASES])
def test_sentence(extractor: RuleExtractor, text: str, entities: dict[str, Certainty],
                  triples: set[tuple[str, str, str]]) -> None:
    reading = extractor.read(text)
    got_entities = {m.text.lower(): m.certainty for m in reading.mentions}
    got_triples = {(r.head.text.lower(), r.relation.value, r.tail.text.lower()) for r in reading.relations}
    assert got_entities == entities
    assert got_triples == triples


def test_keys_are_m3kg_cuis_where_known(extractor: RuleExtractor) -> None:
    reading = extractor.read("Small left pleural effusion. Left-sided effusions.")
    keys = {m.text: m.entry.key for m in reading.mentions}
    assert keys == {"Small": "small", "left": "C0443246", "pleural": "C0032225", "effusion": "C0013687",
                    "Left-sided": "C0443246", "effusions": "C0013687"}


# ---- the dictionary ---------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["at", "no", "not", "may", "within", "seen", "evidence", "the", "a o",
                                   "lung structure (body structure)", "lung, nos", "abdomen and", "views for"])
def test_junk_aliases_never_match(alias: str) -> None:
    assert alias_words(alias) is None
    assert EntityDictionary.bundled().lookup(alias) is None


def test_dictionary_maps_aliases() -> None:
    d = EntityDictionary.bundled()
    assert d.lookup("EFFUSIONS").key == "C0013687"                     # an M3KG form → its CUI
    assert d.lookup("left sided").key == "C0443246"                    # = "left-sided", an M3KG form
    entry = d.lookup("degenerative changes")                            # alias only: its own key
    assert (entry.key, entry.name, entry.type) == ("degenerative changes", "degenerative changes",
                                                   EntityType.CONCEPT)
    assert d.match(["xxxx", "effusion"])[0].first == 1
    assert not d.match(["xxxx"])
    assert {"of", "likely", "consistent", "with", "in"} <= STOP_ALIASES


def test_longest_match_left_to_right() -> None:
    d = EntityDictionary.bundled()
    words = ["chronic", "obstructive", "pulmonary", "disease", "with", "pleural", "effusions"]
    got = [(" ".join(words[s.first:s.last]), s.entry.key) for s in d.match(words)]
    assert got == [("chronic obstructive pulmonary disease", "chronic obstructive pulmonary disease"),
                   ("pleural", "C0032225"), ("effusions", "C0013687")]


def test_user_alias_file(tmp_path: Path) -> None:
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"Foo Bar": "Disorder", "effusion": "disorder", "at": "concept"}))
    d = EntityDictionary.from_files(aliases=path, use_m3kg_forms=False)
    assert len(d) == 2
    assert d.lookup("foo-bar").key == "foo bar" and d.lookup("foo bar").type is EntityType.DISORDER
    assert d.lookup("effusion").key == "effusion"                      # no M3KG forms asked for
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": "organ"}))
    with pytest.raises(DataError, match="organ"):
        EntityDictionary.from_files(aliases=bad, use_m3kg_forms=False)


# ---- studies, aggregation, determinism ----------------------------------------------------------

def _record(study_id: str, report: str, dataset: str = "iu_xray", n_images: int = 2) -> StudyRecord:
    return StudyRecord(study_id, tuple(Path(f"{study_id}/{i}.png") for i in range(n_images)), report,
                       split="train", dataset=dataset)


def test_study_nodes_and_views() -> None:
    node = study_node(_record("CXR1_IM-1", "x"))
    assert [(i.path, i.view) for i in node.images] == [("CXR1_IM-1/0.png", "frontal"), ("CXR1_IM-1/1.png", "lateral")]
    assert (node.id, node.split, node.dataset) == ("CXR1_IM-1", "train", "iu_xray")
    assert {i.view for i in study_node(_record("s", "x", dataset="mimic_cxr")).images} == {""}
    assert {i.view for i in study_node(_record("s", "x", n_images=3)).images} == {""}


def test_aggregation_and_counts(extractor: RuleExtractor) -> None:
    kg = extractor.extract([
        _record("a", "No pleural effusion. Small left pleural effusion."),
        _record("b", "Possible small effusion. No effusion."),
        _record("c", "The lungs are clear."),
    ])
    kg.validate()
    mentions = {(m.study, m.entity): (m.certainty, m.count) for m in kg.mentions}
    assert mentions[("a", "C0013687")] == (P, 2)                       # present beats absent
    assert mentions[("b", "C0013687")] == (U, 2)                       # uncertain beats absent
    assert ("c", "C0013687") not in mentions
    entities = {e.key: e for e in kg.entities}
    assert entities["C0013687"].count == 4
    assert entities["C0013687"].aliases == ("effusion",)
    triples = {(t.head, t.relation, t.tail): t.count for t in kg.triples}
    assert triples[("C0013687", Relation.LOCATED_AT, "C0032225")] == 2   # one per sentence
    assert triples[("small", Relation.MODIFY, "C0013687")] == 2
    assert [s.id for s in kg.studies] == ["a", "b", "c"]
    assert any(link.entity == "C0013687" and link.observation.value == "Pleural Effusion" for link in kg.links)


def test_relations_from_absent_can_be_switched_off() -> None:
    strict = RuleExtractor(config=RuleConfig(relations_from_absent=False))
    assert not strict.read("No pneumothorax or pleural effusion is seen.").relations
    assert strict.read("Small left pleural effusion.").relations


def test_deterministic_and_idempotent(extractor: RuleExtractor, iu_records: list[StudyRecord]) -> None:
    sample = iu_records[:300]
    first = extractor.extract(sample)
    assert extractor.extract(sample) == first
    assert RuleExtractor().extract(list(reversed(sample))) == first     # input order does not matter
    assert [e.key for e in first.entities] == sorted(e.key for e in first.entities)
    triple_keys = [(t.head, t.relation.value, t.tail) for t in first.triples]
    assert triple_keys == sorted(triple_keys)
    assert [s.id for s in first.studies] == sorted(s.id for s in first.studies)
    mention_keys = [(m.study, m.entity) for m in first.mentions]
    assert mention_keys == sorted(mention_keys)


def test_odd_ids_survive(extractor: RuleExtractor) -> None:
    ids = ['CXR"1\\x', "étude→2", "it's 3", "a\\\\b"]
    kg = extractor.extract([_record(i, "Small left pleural effusion. Naïve “quoted” text \\ here.") for i in ids])
    kg.validate()
    assert {s.id for s in kg.studies} == set(ids)
    assert {m.study for m in kg.mentions} == set(ids)


def test_conflicting_entries_for_one_key_take_the_majority() -> None:
    devices, procedures = (DictEntry("cabg markers", "cabg markers", t) for t in (EntityType.DEVICES,
                                                                                  EntityType.PROCEDURES))
    orders = ([devices, procedures, procedures], [procedures, devices, procedures])
    graphs = []
    for order in orders:
        acc = GraphAccumulator()
        acc.add_study(study_node(_record("s", "")))
        for entry in order:
            acc.add_mention("s", entry, "CABG markers", P)
        graphs.append(acc.build())
    assert graphs[0] == graphs[1]
    assert graphs[0].entities[0].type is EntityType.PROCEDURES and graphs[0].entities[0].count == 3


def test_duplicate_study_ids_are_refused(extractor: RuleExtractor) -> None:
    with pytest.raises(DataError, match="duplicate study id 'a'"):
        extractor.extract([_record("a", "x"), _record("a", "y")])


def test_iu_train_graph(extractor: RuleExtractor, iu_records: list[StudyRecord]) -> None:
    assert isinstance(extractor, Extractor)
    kg = extractor.extract(iu_records)
    kg.validate()
    assert len(kg.studies) == 2069
    stats = kg.stats()
    assert stats.entities > 500 and stats.triples > 1500
    assert all(stats.relations[r.value] > 0 for r in Relation)
    assert stats.observations_linked >= 30


# ---- comparison -------------------------------------------------------------------------------

def _kg(triples: list[tuple[str, Relation, str, int]]) -> KnowledgeGraph:
    keys = sorted({k for h, _, t, _ in triples for k in (h, t)})
    return KnowledgeGraph(entities=[Entity(k, k, EntityType.CONCEPT) for k in keys],
                          triples=[Triple(h, r, t, c) for h, r, t, c in triples])


def test_compare_graphs_on_hand_made_graphs() -> None:
    built = _kg([("a", Relation.MODIFY, "b", 2), ("c", Relation.LOCATED_AT, "b", 1), ("x", Relation.MODIFY, "y", 1)])
    ref = _kg([("a", Relation.MODIFY, "b", 6), ("b", Relation.LOCATED_AT, "c", 3), ("d", Relation.SUGGESTIVE_OF, "a", 1)])
    c = compare_graphs(built, ref)
    assert (c.shared_entities, c.shared_triples, c.shared_pairs) == (3, 1, 2)
    assert c.entity_precision == pytest.approx(3 / 5) and c.entity_coverage == pytest.approx(3 / 4)
    assert c.triple_precision == pytest.approx(1 / 3) and c.triple_coverage == pytest.approx(1 / 3)
    assert c.reference_support_covered == pytest.approx(6 / 10)
    assert c.relation_fractions(c.built) == pytest.approx({"modify": 2 / 3, "located_at": 1 / 3, "suggestive_of": 0})
    assert c.relation_fractions(c.built, mentions=True)["modify"] == pytest.approx(3 / 4)
    table = c.format()
    assert "shared triples:  1 = 33.3% of built" in table and "suggestive_of" in table
