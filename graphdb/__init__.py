"""The knowledge graph: M3KG and report-extracted entities and relations in a graph store, queried
as per-study multi-granularity subgraphs and turned into tensors for the model's R-GCN.

Read in data order: schema → m3kg / extract → store (embedded_store | neo4j_store, Cypher in
cypher.py) → subgraphs → tensorize / features → provider (what the model uses).
"""
