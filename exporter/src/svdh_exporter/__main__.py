"""``python -m svdh_exporter`` is ``svdh-export``."""

from .cli import main

main()
