"""The ``svdh-run`` console entry: ``--warm`` goes to the warm process before anything heavy is imported."""

from __future__ import annotations

import sys


def main() -> None:
    """Console entry point."""
    if "--warm" in sys.argv[1:]:  # the cheap test first: most runs import nothing more for it
        _try_warm_process()
    from .cli import main as run

    run()


def _try_warm_process() -> None:
    """Run the command in the warm process and exit with its code, when it asks for one and one answers;
    else return, with a note, and the command runs here."""
    from .warm_client import forward, wants_warm

    if wants_warm(sys.argv[1:]):
        code = forward(sys.argv[1:])
        if code is not None:
            sys.exit(code)
        sys.stderr.write("svdh-run: note: no warm process answers (start one with svdh-run serve-local); "
                         "scoring in this process\n")  # fmt: skip
