"""``python -m rollguard.streams.cli``: the ``rollguard`` command."""

from rollguard.streams.cli import main

main()
