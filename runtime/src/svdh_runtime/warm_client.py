"""``svdh-run --warm ...``: hand the command to the warm process (``svdh-run serve-local``) and show its answer.

This side imports only the standard library, so that a call costs little more than Python's own start: the
warm process has the bundle, the backend and the scoring code loaded already. Where none is running, the
command runs in this process as usual (with a note).

The exchange, over a Unix-domain socket that only this user can open: one JSON line from here (``cwd``,
``args``, whether stderr is a terminal), then JSON lines back: ``{"out": text}``, ``{"err": text}``, and last
``{"exit": code}``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

SOCKET_ENV = "SVDH_WARM_SOCKET"
WARM_FLAG = "--warm"
PROTOCOL = 1
NOT_FORWARDED = {"serve", "status", "resend", "progression", "serve-local"}  # subcommands run here


def socket_path() -> Path:
    """``$SVDH_WARM_SOCKET``, else ``$XDG_RUNTIME_DIR/svdh-run.sock``, else ``/tmp/svdh-<uid>/run.sock``."""
    chosen = os.environ.get(SOCKET_ENV)
    if chosen:
        return Path(chosen)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "svdh-run.sock"
    return Path(f"/tmp/svdh-{os.getuid()}") / "run.sock"


def wants_warm(args: list[str]) -> bool:
    """Whether the command line asks for the warm process (the main command only)."""
    if not args or args[0] in NOT_FORWARDED:
        return False
    options = args[: args.index("--")] if "--" in args else args
    return WARM_FLAG in options


def forward(args: list[str]) -> int | None:
    """Run ``svdh-run ARGS`` in the warm process; its exit code, or None when no warm process answers."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(socket_path()))
    except OSError:
        connection.close()
        return None
    request = {"protocol": PROTOCOL, "cwd": os.getcwd(), "args": args, "stderr_tty": sys.stderr.isatty()}
    try:
        connection.sendall(json.dumps(request).encode("utf-8") + b"\n")
        connection.shutdown(socket.SHUT_WR)
        with connection.makefile("rb") as replies:
            for line in replies:
                message = json.loads(line)
                if "out" in message:
                    sys.stdout.write(message["out"])
                    sys.stdout.flush()
                elif "err" in message:
                    sys.stderr.write(message["err"])
                    sys.stderr.flush()
                elif "exit" in message:
                    return int(message["exit"])
    except KeyboardInterrupt:
        sys.stderr.write("svdh-run: interrupted\n")
        return 130
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"svdh-run: the warm process failed to answer ({exc.__class__.__name__})\n")
        return 1
    finally:
        connection.close()
    sys.stderr.write("svdh-run: the warm process stopped before it finished this command\n")
    return 1
