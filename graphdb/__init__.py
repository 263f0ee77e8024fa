"""graphdb package."""
