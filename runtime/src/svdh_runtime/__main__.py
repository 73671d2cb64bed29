"""``python -m svdh_runtime`` is ``svdh-run``."""

from .cli import main

main()
