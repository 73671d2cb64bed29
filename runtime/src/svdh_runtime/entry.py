"""The ``svdh-run`` console entry: ``--warm`` goes to the warm process before anything heavy is imported."""

from __future__ import annotations

import sys


def main() -> None:
    """Console entry point."""
    from .warm_client import forward, wants_warm

    if wants_warm(sys.argv[1:]):
        code = forward(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        sys.stderr.write("svdh-run: note: no warm process answers (start one with svdh-run serve-local); "
                         "scoring in this process\n")  # fmt: skip
    from .cli import main as run

    run()
