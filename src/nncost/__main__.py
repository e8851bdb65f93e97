"""``python -m nncost``: the same as the ``nncost`` command."""

from nncost.cli import main

main()
