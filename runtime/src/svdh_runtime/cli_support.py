"""What every svdh command line shares: one-line errors and documented exit codes."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .errors import ExitCode, SvdhError
from .logs import LogLevel
from .text import one_line

LogLevelOption = Annotated[
    LogLevel, typer.Option("--log-level", help="Diagnostics on stderr: warning, info or debug (never patient data).")
]


def err(message: str) -> None:
    """Print a message for the person at the terminal (stderr, flushed), on one line."""
    print(one_line(message), file=sys.stderr, flush=True)


def run_app(app: typer.Typer, prog: str, args: list[str] | None = None) -> None:
    """Run a Typer app on ``args`` (default: the command line): expected failures print one line and exit
    with their code, never a traceback."""
    try:
        result = app(prog_name=prog, args=args, standalone_mode=False)
    except SvdhError as exc:
        err(f"{prog}: error: {exc}")
        sys.exit(int(exc.exit_code))
    except (KeyboardInterrupt, typer.Abort):
        err(f"{prog}: interrupted")
        sys.exit(130)
    except Exception as exc:
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # usage errors of click (vendored by recent typer releases): message and usage line
            sys.exit(exc.exit_code)
        if os.environ.get("SVDH_DEBUG"):
            raise
        detail = " ".join(str(exc).split())[:200]
        err(f"{prog}: unexpected error: {type(exc).__name__}: {detail} (set SVDH_DEBUG=1 for details)")
        sys.exit(int(ExitCode.UNEXPECTED))
    sys.exit(result if isinstance(result, int) else 0)
