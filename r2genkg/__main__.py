"""`python -m r2genkg`: the same as the `r2genkg` command."""
from r2genkg.cli import main

if __name__ == "__main__":
    main()
