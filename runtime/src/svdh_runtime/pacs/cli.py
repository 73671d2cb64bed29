"""``svdh-run serve``, ``svdh-run status`` and ``svdh-run resend``: run a PACS node, ask how it is doing,
and have it send results again."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..backends.choice import BackendChoice
from ..cli_support import LogLevelOption, err
from ..errors import ExitCode
from ..logs import LogLevel
from .spool import MAX_STORE_MIB

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="The svdh PACS node.")
LEGACY_SPOOL = Path("svdh-spool")  # where nodes before 0.4 kept their queue: the folder they were started in
SpoolOption = Annotated[
    Optional[Path],
    typer.Option(
        help="The node's queue folder (received images, results, status). "
        "Default: $XDG_STATE_HOME/svdh/spool, else ~/.local/state/svdh/spool.",
        show_default=False,
    ),
]


def _spool(option: Optional[Path]) -> Path:
    from .spool import default_spool

    return (option if option is not None else default_spool()).absolute()


def _destination(text: Optional[str]):  # noqa: ANN202
    from .node import Destination

    if text is None:
        return None
    try:
        return Destination.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--forward") from None


@app.command("serve")
def serve(
    ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title (callers must call it).")] = "SVDH",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 11112,
    bind: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: all interfaces, as a PACS node needs).")
    ] = "0.0.0.0",
    spool: SpoolOption = None,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Images waiting before new ones are refused (status A700).")
    ] = 500,
    max_store_mib: Annotated[
        int,
        typer.Option(
            "--max-store-mib",
            min=1,
            help="Largest dataset one C-STORE may send, in MiB; a larger one is aborted as it arrives.",
        ),
    ] = MAX_STORE_MIB,
    forward: Annotated[
        Optional[str], typer.Option(help="Send each SR and SC by C-STORE to HOST:PORT:AET (e.g. the PACS).")
    ] = None,
    forward_tls: Annotated[
        bool, typer.Option("--forward-tls", help="Send to --forward over DICOM TLS (uses --tls-cert/-key/-ca).")
    ] = False,
    outbox: Annotated[Optional[Path], typer.Option(help="Also write each SR and SC into this folder.")] = None,
    allow: Annotated[
        Optional[list[str]],
        typer.Option(
            "--allow",
            help="Accept associations only from this calling AE title: AET, AET@HOST (address, network or "
            "name) or *@HOST; repeatable. Default: any.",
            show_default=False,
        ),
    ] = None,
    allow_file: Annotated[
        Optional[Path], typer.Option("--allow-file", help="More --allow rules, one per line (# comments).")
    ] = None,
    tls_cert: Annotated[
        Optional[Path], typer.Option("--tls-cert", help="DICOM TLS: this node's certificate (PEM).")
    ] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="DICOM TLS: its private key (PEM).")] = None,
    tls_ca: Annotated[
        Optional[Path],
        typer.Option("--tls-ca", help="DICOM TLS: CA certificate(s); senders must present a certificate it signed."),
    ] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle (default: the shipped one).")] = None,
    backend: Annotated[BackendChoice, typer.Option(help="Inference backend (as for svdh-run).")] = BackendChoice.auto,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for inference (0: library default).")] = 0,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Waiting images taken together: read and prepared on every core, scored in one model call.",
        ),
    ] = 8,
    log_level: LogLevelOption = LogLevel.warning,
) -> None:
    """Receive radiographs by DICOM (C-STORE, C-ECHO), score each, and send its SR and Secondary Capture on.

    Every image is on disk before its C-STORE is acknowledged; a restart resumes the queue. Without --forward,
    results go to --outbox (default: SPOOL/outbox)."""
    from ..logs import configure
    from .access import AllowRule, TlsFiles, check_ae_title, read_allow_file
    from .node import NodeOptions, PacsNode

    configure(log_level.value)
    ae_title = check_ae_title(ae_title, "--ae-title")
    destination = _destination(forward)
    if forward_tls and destination is None:
        raise typer.BadParameter("needs --forward", param_hint="--forward-tls")
    rules = [*(allow or []), *(read_allow_file(allow_file) if allow_file is not None else [])]
    tls = TlsFiles.from_options(tls_cert, tls_key, tls_ca)
    if forward_tls and tls is None:
        raise typer.BadParameter("needs --tls-cert, --tls-key and --tls-ca", param_hint="--forward-tls")
    folder = _spool(spool)
    if spool is None and (LEGACY_SPOOL / "status.json").is_file() and LEGACY_SPOOL.absolute() != folder:
        err(
            f"svdh-run serve: note: ./{LEGACY_SPOOL} holds the queue of a node started here before; "
            f"this node uses {folder} (pass --spool {LEGACY_SPOOL} to keep using the old one)"
        )
    if destination is None and outbox is None:
        outbox = folder / "outbox"
    options = NodeOptions(
        spool=folder,
        ae_title=ae_title,
        port=port,
        bind=bind,
        max_queue=max_queue,
        forward=destination,
        outbox=outbox,
        model=model,
        backend=backend.value,
        threads=threads or None,
        allow=tuple(AllowRule.parse(rule) for rule in rules),
        tls=tls,
        forward_tls=forward_tls,
        max_store_bytes=max_store_mib << 20,
        batch_size=batch_size,
    )
    PacsNode(options, log=lambda message: err(f"svdh-run serve: {message}")).run()


@app.command("status")
def status(
    spool: SpoolOption = None,
    max_age: Annotated[float, typer.Option("--max-age", help="Seconds without a heartbeat before 'down'.")] = 15.0,
) -> None:
    """Print the node's status as JSON; exit 0 when it is running, 4 when it is not."""
    from .node import read_status

    folder = _spool(spool)
    if not (folder / "status.json").exists():
        print(json.dumps({"spool": str(folder), "state": "down", "running": False}, indent=2))
        err(f"svdh-run status: no node has run with the spool {folder} (start one with svdh-run serve)")
        raise typer.Exit(int(ExitCode.NODE_DOWN))
    record = read_status(folder)
    age = time.time() - float(record.get("heartbeat", 0))
    record["spool"] = str(folder)
    record["heartbeat_age_s"] = round(age, 1)
    gone = _process_gone(record)
    up = bool(record.get("running")) and age <= max_age and not gone
    record["state"] = "up" if up else "down"
    print(json.dumps(record, indent=2))
    if not up:
        why = f"its process {record.get('pid')} is gone" if gone else f"last heartbeat {age:.0f} s ago"
        err(f"svdh-run status: the node of {folder} is not running ({why})")
        raise typer.Exit(int(ExitCode.NODE_DOWN))


def _process_gone(record: dict) -> bool:
    """True when the status was written on this host by a process that no longer exists (killed with -9:
    no chance to say so). A node on another host sharing the spool is judged by its heartbeat alone."""
    import os
    import socket

    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


@app.command("resend")
def resend(
    sop_instance_uid: Annotated[
        Optional[str], typer.Argument(help="SOP Instance UID of a radiograph the node has scored.", show_default=False)
    ] = None,
    all_since: Annotated[
        Optional[str],
        typer.Option(
            "--all-since", help="Every radiograph received on or after this date (YYYY-MM-DD[THH:MM], local time)."
        ),
    ] = None,
    spool: SpoolOption = None,
) -> None:
    """Have the node send the SR and Secondary Capture of scored radiographs again (they are not scored again).

    The running node acts within seconds; a stopped one when it next starts."""
    from ..errors import InputError
    from .node import read_status
    from .spool import Spool, item_key

    if (sop_instance_uid is None) == (all_since is None):
        raise typer.BadParameter("give a SOP Instance UID or --all-since DATE (one of the two)")
    folder = _spool(spool)
    if not (folder / "done").is_dir():
        raise InputError(f"{folder}: not the spool of a node (pass the node's --spool)")
    queue = Spool(folder)
    if all_since is not None:
        keys = queue.done_since(_since(all_since))
        if not keys:
            err(f"svdh-run resend: nothing received since {all_since} has been scored and delivered")
            return
    else:
        key = item_key(sop_instance_uid)
        state = queue.state_of(key)
        if state in ("incoming", "work"):
            err(f"svdh-run resend: {sop_instance_uid} is still in the queue; its results are sent when it is done")
            return
        if state == "failed":
            reason = _failure_reason(folder, key)
            raise InputError(f"{sop_instance_uid} was not scored ({reason}): there are no results to send")
        if state is None:
            raise InputError(f"{sop_instance_uid}: this node has not received that instance (spool {folder})")
        keys = [key]
    for key in keys:
        queue.request_resend(key)
    try:
        record = read_status(folder)
        running = bool(record.get("running")) and time.time() - float(record.get("heartbeat", 0)) <= 15.0
    except InputError:
        running = False
    when = "within seconds" if running else "when it next starts (it is not running now)"
    err(f"svdh-run resend: {len(keys)} instance(s) queued; the node sends their results again {when}")


def _since(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)", param_hint="--all-since"
        ) from None
    return moment.timestamp()  # a date without a zone is local time


def _failure_reason(folder: Path, key: str) -> str:
    try:
        return str(json.loads((folder / "failed" / f"{key}.json").read_text(encoding="utf-8"))["reason"])
    except (OSError, ValueError, KeyError):
        return "refused"
