"""R2GenKG: cross-cutting pieces (CLI, offline defaults). The method lives in graphdb/, encoders/, retrieval/, generator/."""
