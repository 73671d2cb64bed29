"""``svdh-run serve`` and ``svdh-run status``: run a PACS node, and ask how it is doing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..backends.choice import BackendChoice
from ..cli_support import LogLevelOption, err
from ..errors import ExitCode
from ..logs import LogLevel

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="The svdh PACS node.")
DEFAULT_SPOOL = Path("svdh-spool")


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
    ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")] = "SVDH",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 11112,
    bind: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    spool: Annotated[Path, typer.Option(help="Queue folder (received images, results, status).")] = DEFAULT_SPOOL,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Images waiting before new ones are refused (status A700).")
    ] = 500,
    forward: Annotated[
        Optional[str], typer.Option(help="Send each SR and SC by C-STORE to HOST:PORT:AET (e.g. the PACS).")
    ] = None,
    outbox: Annotated[Optional[Path], typer.Option(help="Also write each SR and SC into this folder.")] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Bundle (default: the shipped one).")] = None,
    backend: Annotated[BackendChoice, typer.Option(help="Inference backend (as for svdh-run).")] = BackendChoice.auto,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for inference (0: library default).")] = 0,
    log_level: LogLevelOption = LogLevel.warning,
) -> None:
    """Receive radiographs by DICOM (C-STORE, C-ECHO), score each, and send its SR and Secondary Capture on.

    Every image is on disk before its C-STORE is acknowledged; a restart resumes the queue. Without --forward,
    results go to --outbox (default: SPOOL/outbox)."""
    from ..logs import configure
    from .node import NodeOptions, PacsNode

    configure(log_level.value)
    if len(ae_title) > 16 or not ae_title.strip():
        raise typer.BadParameter("must be 1-16 characters", param_hint="--ae-title")
    destination = _destination(forward)
    if destination is None and outbox is None:
        outbox = spool / "outbox"
    options = NodeOptions(
        spool=spool,
        ae_title=ae_title,
        port=port,
        bind=bind,
        max_queue=max_queue,
        forward=destination,
        outbox=outbox,
        model=model,
        backend=backend.value,
        threads=threads or None,
    )
    PacsNode(options, log=lambda message: err(f"svdh-run serve: {message}")).run()


@app.command("status")
def status(
    spool: Annotated[Path, typer.Option(help="The node's --spool folder.")] = DEFAULT_SPOOL,
    max_age: Annotated[float, typer.Option("--max-age", help="Seconds without a heartbeat before 'down'.")] = 15.0,
) -> None:
    """Print the node's status as JSON; exit 0 when it is running, 4 when it is not."""
    from .node import read_status

    record = read_status(spool)
    age = time.time() - float(record.get("heartbeat", 0))
    record["heartbeat_age_s"] = round(age, 1)
    up = bool(record.get("running")) and age <= max_age
    record["state"] = "up" if up else "down"
    print(json.dumps(record, indent=2))
    if not up:
        err(f"svdh-run status: the node is not running (last heartbeat {age:.0f} s ago)")
        raise typer.Exit(int(ExitCode.NODE_DOWN))
