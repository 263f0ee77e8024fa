"""One module per `r2genkg` command group; each exposes `register(app)`."""
