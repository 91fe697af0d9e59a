"""``python -m streams.cli``: the ``rollguard`` command."""

from streams.cli import main

main()
