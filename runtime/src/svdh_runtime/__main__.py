"""``python -m svdh_runtime`` is ``svdh-run``."""

from .entry import main

main()
