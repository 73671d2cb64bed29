"""``svdh-run serve-local``: a warm process for sites that score one image at a time.

It loads the scoring code, reads the bundle and opens the backend once, then runs each ``svdh-run --warm
...`` command it is handed (:mod:`svdh_runtime.warm_client`) exactly as ``svdh-run`` would, in the caller's
folder, with the caller's arguments: the same results, files, messages and exit code, without the start-up.
Commands run one at a time, in arrival order.

Only this user can reach it: the socket is mode 0600 in a folder only this user can enter
(``$XDG_RUNTIME_DIR``, else ``/tmp/svdh-<uid>``, made 0700 and checked), and on Linux each caller's user
id is checked too. Its own log says how long each command took and how it ended, never which files.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .backends.choice import BackendChoice
from .cli_support import LogLevelOption, err
from .errors import InputError, SvdhError
from .logs import LogLevel
from .warm_client import PROTOCOL, socket_path

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
MAX_REQUEST_BYTES = 1 << 20
REQUEST_TIMEOUT_S = 10.0


class ServiceError(SvdhError):
    """The warm process cannot start (its socket is taken or unsafe)."""


class _Relay(io.TextIOBase):
    """A text stream whose writes go to the caller as ``{"out": ...}`` or ``{"err": ...}`` lines."""

    def __init__(self, connection: socket.socket, key: str, lock: threading.Lock, tty: bool = False) -> None:
        self._connection, self._key, self._lock, self._tty = connection, key, lock, tty

    def write(self, text: str | bytes) -> int:
        if isinstance(text, bytes):  # click writes bytes where it finds no binary buffer
            text = text.decode("utf-8", errors="replace")
        if text:
            line = json.dumps({self._key: text}).encode("utf-8") + b"\n"
            with self._lock:
                self._connection.sendall(line)
        return len(text)

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def _private_folder(folder: Path) -> None:
    """Make ``folder`` (0700) or check that it is a real folder of this user's that no one else can enter."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ServiceError(f"{folder}: must be a folder of this user's that no one else can open (mode 0700)")


def _claim_socket(path: Path) -> socket.socket:
    """Listen at ``path``; a socket left by a process that ended is replaced, a live one refused."""
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(os.lstat(path).st_mode)):
        raise ServiceError(f"{path}: exists and is not a socket; choose another with --socket")
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a warm process that ended
        else:
            raise ServiceError(f"a warm process already serves {path}")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o177)  # the socket is born 0600 (no threads yet: the umask is safe to change here)
    try:
        listener.bind(str(path))
    finally:
        os.umask(mask)
    listener.listen(16)
    return listener


def _same_user(connection: socket.socket) -> bool:
    """Whether the caller runs as this user (Linux: SO_PEERCRED; elsewhere the socket's mode decides)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    _pid, uid, _gid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return uid == os.getuid()


def _read_request(connection: socket.socket) -> dict[str, Any]:
    """The caller's one JSON line: protocol, cwd, args, stderr_tty."""
    connection.settimeout(REQUEST_TIMEOUT_S)
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise InputError("request too large")
    connection.settimeout(None)
    request = json.loads(data)
    if request.get("protocol") != PROTOCOL:
        raise InputError(f"this warm process speaks protocol {PROTOCOL}; restart it after an upgrade")
    if not isinstance(request.get("args"), list) or not all(isinstance(a, str) for a in request["args"]):
        raise InputError("malformed request")
    return request


def run_command(args: list[str]) -> int:
    """``svdh-run ARGS`` (the main command) in this process; its exit code."""
    from .cli import app as run_app_
    from .cli_support import run_app

    try:
        run_app(run_app_, "svdh-run", args)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


class WarmService:
    """The listening socket and the loop that runs one command at a time."""

    def __init__(self, path: Path, log_level: str = "warning", say=err) -> None:  # noqa: ANN001
        self.path, self.log_level, self.say = path, log_level, say
        self.listener: socket.socket | None = None
        self.commands = 0

    def start(self) -> None:
        """Listen. The default folder under /tmp is made private (0700) and checked; any other must exist."""
        if self.path.parent == Path(f"/tmp/svdh-{os.getuid()}"):
            _private_folder(self.path.parent)
        elif not self.path.parent.is_dir():
            raise ServiceError(f"{self.path.parent}: no such folder for the socket")
        self.listener = _claim_socket(self.path)

    def preload(self, model: Path | None, backend: str, threads: int | None) -> str:
        """Load the scoring code, read the bundle and open the backend now, so that the first command is quick."""
        import numpy as np

        from . import warm
        from .cli import RunOptions, _backend, _bundle
        from .fast_start import import_pydicom_quickly

        import_pydicom_quickly()
        import pydicom  # noqa: F401
        from PIL import Image  # noqa: F401

        from . import batch, overlay, pipeline, report, scoring  # noqa: F401

        warm.enable()
        bundle = _bundle(model)
        opened = _backend(bundle, model, RunOptions(None, False, False, backend, threads, False))
        spec = bundle.manifest.preprocessing
        opened.infer(np.zeros((1, 1, spec.height, spec.width), np.float32))  # the backend's first call is slow
        return f"{bundle.manifest.name} {bundle.manifest.version} on {opened.name}"

    def serve(self) -> None:
        """Answer commands until SIGTERM or SIGINT; then the socket is removed."""
        stopping = threading.Event()

        def stop(_signum: int, _frame: object) -> None:
            stopping.set()
            raise KeyboardInterrupt

        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not stopping.is_set():
                connection, _ = self.listener.accept()
                with connection:
                    self._answer(connection)
        except KeyboardInterrupt:
            pass
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self.close()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            self.path.unlink(missing_ok=True)

    def _answer(self, connection: socket.socket) -> None:
        """Run one caller's command with its output relayed; the process survives whatever the command does."""
        from .logs import configure

        started = time.monotonic()
        self.commands += 1
        number = self.commands
        if not _same_user(connection):
            self.say(f"command {number}: refused: another user's")
            return
        try:
            request = _read_request(connection)
        except (OSError, ValueError, InputError) as exc:
            self.say(f"command {number}: refused: {exc}")
            return
        lock = threading.Lock()
        saved = sys.stdout, sys.stderr, os.getcwd()
        code, ended_early = 1, None
        try:
            os.chdir(request.get("cwd") or "/")
            sys.stdout = _Relay(connection, "out", lock)
            sys.stderr = _Relay(connection, "err", lock, tty=bool(request.get("stderr_tty")))
            code = run_command(request["args"])
        except KeyboardInterrupt:
            raise  # SIGTERM or SIGINT: stop after restoring the streams
        except BaseException as exc:  # a caller that went away (broken pipe), an unknown folder: not the service
            ended_early = type(exc).__name__
        finally:
            sys.stdout, sys.stderr = saved[0], saved[1]
            os.chdir(saved[2])
            configure(self.log_level)  # log records go to this process's stderr again, not to the caller
        if ended_early is not None:
            self.say(f"command {number}: ended early ({ended_early})")
        try:
            connection.sendall(json.dumps({"exit": code}).encode("utf-8") + b"\n")
        except OSError:
            pass
        self.say(f"command {number}: exit {code} in {time.monotonic() - started:.2f} s")


@app.command()
def serve_local(
    model: Annotated[
        Optional[Path],
        typer.Option("--model", "-m", help="Bundle to load now (default: the one shipped with svdh-runtime)."),
    ] = None,
    backend: Annotated[BackendChoice, typer.Option(help="Backend to open now (as svdh-run --backend).")] = (
        BackendChoice.auto
    ),
    threads: Annotated[int, typer.Option(help="CPU threads for inference (0: library default).", min=0)] = 0,
    socket_file: Annotated[
        Optional[Path],
        typer.Option(
            "--socket",
            help="Where to listen (default: $SVDH_WARM_SOCKET, else $XDG_RUNTIME_DIR/svdh-run.sock, else "
            "/tmp/svdh-<uid>/run.sock); svdh-run --warm finds it through the same default or SVDH_WARM_SOCKET.",
            show_default=False,
        ),
    ] = None,
    log_level: LogLevelOption = LogLevel.warning,
) -> None:
    """Keep svdh-run warm: load the code, the bundle and the backend once, then run every `svdh-run --warm ...`
    command of this user (any arguments, any bundle) without the start-up. Stops on Ctrl-C or SIGTERM."""
    from .logs import configure

    configure(log_level.value)
    service = WarmService(Path(socket_file) if socket_file is not None else socket_path(), log_level.value)
    service.start()
    try:
        loaded = service.preload(model, backend.value, threads or None)
    except BaseException:
        service.close()
        raise
    err(f"svdh-run serve-local: ready at {service.path} ({loaded}); svdh-run --warm ... runs here")
    service.serve()
    err("svdh-run serve-local: stopped")
