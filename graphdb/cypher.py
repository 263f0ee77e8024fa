"""Every Cypher string of the project, as named constants, for both stores.

Most queries are one string that Neo4j 5 and LadybugDB (the Kùzu fork) both accept. Where the
dialects differ, the difference lives here and only here, in ``Dialect``:
- LadybugDB needs a schema (``CREATE NODE/REL TABLE``); Neo4j gets constraints and indexes;
- ``label(r)`` (Ladybug) vs ``type(r)`` (Neo4j) for a relationship's type;
- Ladybug has no ``CALL {}`` subqueries, no ``ORDER BY`` inside ``WITH`` without ``LIMIT`` and
  no list comprehensions, so per-study top-k ranking cannot be written once for both; the
  queries return each batch's neighbourhood once and graphdb.subgraphs ranks per study;
- new relationships are bulk-inserted (Ladybug ``COPY <rel> FROM (UNWIND … RETURN …)``, Neo4j
  ``CREATE``) after reading which already exist: relationship ``MERGE`` is ~100 µs a row on
  Ladybug and scans the relationships of hub nodes on Neo4j.
Everything is parameterised. Labels and relationship types are never taken from input: they are
interpolated at import time from the fixed vocabulary in graphdb.schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from graphdb.schema import EXPRESSES, HAS_IMAGE, MENTIONS, RELATIONS, Relation

KG_RELS = "|".join(r.label for r in RELATIONS)   # MODIFY|LOCATED_AT|SUGGESTIVE_OF


def _per_relation(template: str) -> MappingProxyType:
    return MappingProxyType({rel: template.format(rel=rel.label) for rel in RELATIONS})


# ---- writes: UNWIND $rows batches, MERGE on keys -------------------------------------------

UPSERT_ENTITIES = """
UNWIND $rows AS r
MERGE (e:Entity {key: r.key})
SET e.name = r.name, e.type = r.type, e.aliases = r.aliases, e.count = r.count
"""

ADD_MISSING_ENTITIES = """
UNWIND $rows AS r
MERGE (e:Entity {key: r.key})
ON CREATE SET e.name = r.name, e.type = r.type, e.aliases = r.aliases, e.count = r.count
"""
"""Attach a corpus to an existing graph: new entities are added, existing ones keep their data."""

UPSERT_OBSERVATIONS = """
UNWIND $rows AS r
MERGE (o:Observation {name: r.name})
SET o.rank = r.rank
"""

CREATE_TRIPLES: MappingProxyType = _per_relation("""
UNWIND $rows AS r
MATCH (a:Entity {{key: r.head}})
MATCH (b:Entity {{key: r.tail}})
CREATE (a)-[:{rel} {{count: r.count}}]->(b)
""")
"""Neo4j bulk insert of relationships known not to exist yet (the store reads which exist first):
MERGE on a relationship must scan the relationships of its endpoints, which is slow on hubs
(``lung`` has ~2,000)."""

UPDATE_TRIPLE_COUNTS: MappingProxyType = _per_relation("""
UNWIND $rows AS r
MATCH (a:Entity {{key: r.head}})-[x:{rel}]->(b:Entity {{key: r.tail}})
SET x.count = r.count
""")

EXISTING_TRIPLES: MappingProxyType = _per_relation("""
MATCH (a:Entity)-[x:{rel}]->(b:Entity)
RETURN a.key, b.key, x.count
""")

UPSERT_LINKS = f"""
UNWIND $rows AS r
MATCH (e:Entity {{key: r.entity}})
MATCH (o:Observation {{name: r.observation}})
MERGE (e)-[:{EXPRESSES}]->(o)
"""

UPSERT_STUDIES = """
UNWIND $rows AS r
MERGE (s:Study {id: r.id})
SET s.split = r.split, s.dataset = r.dataset
"""

UPSERT_IMAGES = f"""
UNWIND $rows AS r
MERGE (i:Image {{path: r.path}})
SET i.view = r.view
WITH r, i
MATCH (s:Study {{id: r.study}})
MERGE (s)-[:{HAS_IMAGE}]->(i)
"""

CREATE_MENTIONS = f"""
UNWIND $rows AS r
MATCH (s:Study {{id: r.study}})
MATCH (e:Entity {{key: r.entity}})
CREATE (s)-[:{MENTIONS} {{certainty: r.certainty, count: r.count}}]->(e)
"""

EXISTING_MENTIONS = f"""
MATCH (s:Study)-[m:{MENTIONS}]->(e:Entity)
RETURN s.id, e.key, m.certainty, m.count
"""

UPDATE_MENTIONS = f"""
UNWIND $rows AS r
MATCH (s:Study {{id: r.study}})-[m:{MENTIONS}]->(e:Entity {{key: r.entity}})
SET m.certainty = r.certainty, m.count = r.count
"""

# ---- reads ---------------------------------------------------------------------------------

COUNT_NODES = MappingProxyType({label: f"MATCH (n:{label}) RETURN count(n)"
                                for label in ("Entity", "Observation", "Study", "Image")})

COUNT_RELATIONS: MappingProxyType = MappingProxyType({
    **{rel.label: f"MATCH (:Entity)-[x:{rel.label}]->(:Entity) RETURN count(x), sum(x.count)" for rel in RELATIONS},
    EXPRESSES: f"MATCH (:Entity)-[x:{EXPRESSES}]->(:Observation) RETURN count(x) AS n, count(x) AS total",
    HAS_IMAGE: f"MATCH (:Study)-[x:{HAS_IMAGE}]->(:Image) RETURN count(x) AS n, count(x) AS total",
    MENTIONS: f"MATCH (:Study)-[x:{MENTIONS}]->(:Entity) RETURN count(x), sum(x.count)",
})

ENTITY_TYPES = "MATCH (e:Entity) RETURN e.type, count(e) ORDER BY e.type"

ALL_ENTITIES = "MATCH (e:Entity) RETURN e.key, e.name ORDER BY e.key"

ALL_OBSERVATIONS = "MATCH (o:Observation) RETURN o.name, o.rank ORDER BY o.rank"

ALL_LINKS = f"MATCH (e:Entity)-[:{EXPRESSES}]->(o:Observation) RETURN e.key, o.name"
"""Every entity → observation link (the graph's content fingerprint reads them, graphdb.fingerprint)."""

TOP_ENTITIES = """
MATCH (e:Entity)
RETURN e.key, e.name, e.type, e.count
ORDER BY e.count DESC, e.key
LIMIT $limit
"""
"""Global scales (paper mode): the most-mentioned entities."""

STUDY_MENTIONS = f"""
UNWIND $ids AS sid
MATCH (s:Study {{id: sid}})-[m:{MENTIONS}]->(e:Entity)
RETURN s.id, e.key, m.certainty, m.count
ORDER BY s.id, e.key
"""
"""Seeds from a study's own report (teacher forcing): what it mentions, with certainty."""

# Per-study level 0: the seed entities that exist, and every EXPRESSES link touching a seed
# entity or a seed observation (126 links in M3KG, so a scan per study is cheap).
SEED_ENTITIES = """
UNWIND $studies AS s
UNWIND s.ents AS k
MATCH (e:Entity {key: k})
RETURN s.sid, e.key, e.name, e.type, e.count
"""

SEED_LINKS = f"""
UNWIND $studies AS s
MATCH (e:Entity)-[:{EXPRESSES}]->(o:Observation)
WHERE o.name IN s.obs OR e.key IN s.ents
RETURN s.sid, e.key, e.name, e.type, e.count, o.name
"""

# Induced edges among the union of a batch's nodes, each edge once; the caller hands every
# study the edges whose two ends it holds (far fewer rows than one edge list per study).
INDUCED_RELATIONS_TEMPLATE = """
UNWIND $keys AS k
MATCH (a:Entity {{key: k}})-[x:{rels}]->(b:Entity)
WHERE b.key IN $keys
RETURN a.key, {type_fn}(x), b.key, x.count
"""

INDUCED_LINKS = f"""
UNWIND $keys AS k
MATCH (a:Entity {{key: k}})-[:{EXPRESSES}]->(o:Observation)
RETURN a.key, o.name
"""

# One hop out of the union of a batch's frontiers, both directions: every (frontier entity,
# neighbour, edge count) once. The caller scores each study's candidates (summed counts of the
# edges into its own frontier) and keeps the top of each level. Ladybug cannot rank per group
# inside Cypher (no CALL {} and no ORDER BY in WITH without LIMIT), and one row per edge of the
# union is several times fewer rows than one row per (study, candidate).
NEIGHBOURS = f"""
UNWIND $keys AS k
MATCH (a:Entity {{key: k}})-[x:{KG_RELS}]-(b:Entity)
RETURN a.key, b.key, b.count, x.count
"""

ENTITY_INFO = """
UNWIND $keys AS k
MATCH (e:Entity {key: k})
RETURN e.key, e.name, e.type, e.count
"""

# Neo4j only: the DBMS id, a random id made with the store (graphdb/server writes it to
# <home>/run/server-id; graphdb.dev_server compares the two before a test clears anything).
DBMS_ID = "CALL dbms.info() YIELD id RETURN id"

# ---- schema --------------------------------------------------------------------------------

NEO4J_SCHEMA: tuple[str, ...] = (
    "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE e.key IS UNIQUE",
    "CREATE CONSTRAINT observation_name IF NOT EXISTS FOR (o:Observation) REQUIRE o.name IS UNIQUE",
    "CREATE CONSTRAINT study_id IF NOT EXISTS FOR (s:Study) REQUIRE s.id IS UNIQUE",
    "CREATE CONSTRAINT image_path IF NOT EXISTS FOR (i:Image) REQUIRE i.path IS UNIQUE",
    "CREATE INDEX entity_count IF NOT EXISTS FOR (e:Entity) ON (e.count)",
    "CREATE INDEX entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name)",
    "CREATE INDEX entity_type IF NOT EXISTS FOR (e:Entity) ON (e.type)",
    "CREATE INDEX study_split IF NOT EXISTS FOR (s:Study) ON (s.split)",
    *(f"CREATE INDEX {r.value}_count IF NOT EXISTS FOR ()-[x:{r.label}]-() ON (x.count)" for r in RELATIONS),
    "CALL db.awaitIndexes(60)",
)

LADYBUG_SCHEMA: tuple[str, ...] = (
    ("CREATE NODE TABLE IF NOT EXISTS Entity(key STRING PRIMARY KEY, name STRING, type STRING, "
     "aliases STRING[], count INT64)"),
    "CREATE NODE TABLE IF NOT EXISTS Observation(name STRING PRIMARY KEY, rank INT64)",
    "CREATE NODE TABLE IF NOT EXISTS Study(id STRING PRIMARY KEY, split STRING, dataset STRING)",
    "CREATE NODE TABLE IF NOT EXISTS Image(path STRING PRIMARY KEY, view STRING)",
    *(f"CREATE REL TABLE IF NOT EXISTS {r.label}(FROM Entity TO Entity, count INT64)" for r in RELATIONS),
    f"CREATE REL TABLE IF NOT EXISTS {EXPRESSES}(FROM Entity TO Observation)",
    f"CREATE REL TABLE IF NOT EXISTS {HAS_IMAGE}(FROM Study TO Image)",
    f"CREATE REL TABLE IF NOT EXISTS {MENTIONS}(FROM Study TO Entity, certainty STRING, count INT64)",
)
"""LadybugDB has primary keys (unique + indexed) but no secondary indexes."""

LADYBUG_COPY_TRIPLES: MappingProxyType = _per_relation("""
COPY {rel} FROM (UNWIND $rows AS r RETURN r.head, r.tail, r.count)
""")
"""Bulk insert of relationships known not to exist yet."""

LADYBUG_COPY_MENTIONS = f"""
COPY {MENTIONS} FROM (UNWIND $rows AS r RETURN r.study, r.entity, r.certainty, r.count)
"""


@dataclass(frozen=True)
class Dialect:
    """The queries that differ between Neo4j and LadybugDB."""

    name: str
    schema: tuple[str, ...]
    induced_relations: str
    create_triples: MappingProxyType     # relation → bulk insert of new relationships
    create_mentions: str
    delete_all: str                      # every node and relationship


NEO4J = Dialect(
    name="neo4j",
    schema=NEO4J_SCHEMA,
    induced_relations=INDUCED_RELATIONS_TEMPLATE.format(rels=KG_RELS, type_fn="type"),
    create_triples=CREATE_TRIPLES,
    create_mentions=CREATE_MENTIONS,
    # batched, so a big graph does not need one huge transaction (runs in an auto-commit session)
    delete_all="MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS",
)

LADYBUG = Dialect(
    name="ladybug",
    schema=LADYBUG_SCHEMA,
    induced_relations=INDUCED_RELATIONS_TEMPLATE.format(rels=KG_RELS, type_fn="label"),
    create_triples=LADYBUG_COPY_TRIPLES,
    create_mentions=LADYBUG_COPY_MENTIONS,
    delete_all="MATCH (n) DETACH DELETE n",
)

__all__ = ["KG_RELS", "LADYBUG", "NEO4J", "Dialect", "Relation"]


# ---- ready queries for Neo4j Browser (docs/neo4j_browser.md shows them; tests run each) ----

@dataclass(frozen=True)
class BrowserQuery:
    title: str
    why: str
    cypher: str
    params: dict = field(default_factory=dict)


BROWSER_QUERIES: tuple[BrowserQuery, ...] = (
    BrowserQuery(
        "Top modifiers of a finding",
        "How radiologists qualify effusion: size, side, change.",
        """MATCH (m:Entity)-[r:MODIFY]->(f:Entity {name: $finding})
RETURN m.name AS modifier, m.type AS type, r.count AS mentions
ORDER BY mentions DESC LIMIT 15""",
        {"finding": "effusion"}),
    BrowserQuery(
        "Top locations of a finding",
        "Where effusion is reported.",
        """MATCH (f:Entity {name: $finding})-[r:LOCATED_AT]->(a:Entity)
RETURN a.name AS location, a.type AS type, r.count AS mentions
ORDER BY mentions DESC LIMIT 15""",
        {"finding": "effusion"}),
    BrowserQuery(
        "Everything suggestive of a diagnosis",
        "Findings that reports say suggest pneumonia (the suggestive_of relation).",
        """MATCH (f:Entity)-[r:SUGGESTIVE_OF]->(d:Entity {name: $diagnosis})
RETURN f.name AS finding, f.type AS type, r.count AS mentions
ORDER BY mentions DESC LIMIT 25""",
        {"diagnosis": "pneumonia"}),
    BrowserQuery(
        "The observation hierarchy",
        "The coarse, disease level: which entities express each CheXpert observation.",
        """MATCH (e:Entity)-[:EXPRESSES]->(o:Observation)
WITH o, e ORDER BY e.count DESC
RETURN o.rank AS rank, o.name AS observation, count(e) AS entities, collect(e.name)[..8] AS top_entities
ORDER BY rank"""),
    BrowserQuery(
        "One study's graph",
        "What a report mentions, with certainty, and the KG relations among those entities "
        "(switch to the Graph view).",
        f"""MATCH (s:Study {{id: $study}})-[m:MENTIONS]->(e:Entity)
OPTIONAL MATCH (e)-[r:{KG_RELS}]->(e2:Entity)<-[:MENTIONS]-(s)
RETURN s, m, e, r, e2""",
        {"study": "CXR1451_IM-0291"}),
    BrowserQuery(
        "Entities shared by two studies",
        "What two reports have in common, and how each states it.",
        """MATCH (a:Study {id: $study_a})-[ma:MENTIONS]->(e:Entity)<-[mb:MENTIONS]-(b:Study {id: $study_b})
RETURN e.name AS entity, e.type AS type, ma.certainty AS in_a, mb.certainty AS in_b
ORDER BY e.count DESC""",
        {"study_a": "CXR2384_IM-0942", "study_b": "CXR1451_IM-0291"}),
    BrowserQuery(
        "Studies with an observation present",
        "Studies whose report states an entity of the observation as present.",
        """MATCH (s:Study)-[:MENTIONS {certainty: 'present'}]->(e:Entity)-[:EXPRESSES]->(o:Observation {name: $observation})
RETURN s.id AS study, s.split AS split, collect(DISTINCT e.name) AS entities
ORDER BY study LIMIT 25""",
        {"observation": "Atelectasis"}),
    BrowserQuery(
        "Most often negated findings",
        "What reports rule out most often (MENTIONS with certainty absent).",
        """MATCH (:Study)-[m:MENTIONS {certainty: 'absent'}]->(e:Entity)
RETURN e.name AS entity, count(m) AS studies
ORDER BY studies DESC LIMIT 15"""),
    BrowserQuery(
        "Two-hop neighbourhood of an entity",
        "The per-study subgraph's 2-hop level, as paths (Graph view).",
        f"""MATCH p = (e:Entity {{name: $finding}})-[:{KG_RELS}*1..2]-(:Entity)
RETURN p LIMIT 50""",
        {"finding": "atelectasis"}),
    BrowserQuery(
        "Relation types and their support",
        "The three M3KG relations: distinct triples and summed mention counts.",
        f"""MATCH (:Entity)-[r:{KG_RELS}]->(:Entity)
RETURN type(r) AS relation, count(r) AS triples, sum(r.count) AS mentions
ORDER BY triples DESC"""),
    BrowserQuery(
        "Most-mentioned entities of a type",
        "The hubs of the graph, e.g. devices.",
        """MATCH (e:Entity {type: $type})
RETURN e.name AS entity, e.key AS key, e.count AS mentions
ORDER BY mentions DESC LIMIT 20""",
        {"type": "devices"}),
)
"""Neo4j Browser queries (Neo4j syntax). In the Browser set parameters with ``:param``."""
