"""`python -m mockgen`: the same as the `mockgen` command."""

from .cli import main

main()
