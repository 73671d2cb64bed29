"""The PACS node's disk queue: nothing received is lost, nothing is scored twice.

Layout under the spool folder (every move is an atomic rename on one file system)::

    receiving/             datasets arriving, written as they come (never held whole in memory)
    incoming/UID.dcm       received and fsynced before the C-STORE is acknowledged
    work/UID.dcm           taken by the worker
    results/UID/           attempts (while scoring), sr.dcm, sc.dcm, then result.json (written last: "scored")
    done/UID.dcm           the original, once its results were delivered (kept)
    failed/UID.dcm + .json refused inputs with the reason (kept)
    resend/UID             an administrator's request to send a done item's results again
    status.json            the node's heartbeat and counts

Without ``--spool`` the node keeps its queue in one documented per-user place,
:func:`default_spool` (``$XDG_STATE_HOME/svdh/spool``, else
``~/.local/state/svdh/spool``), whatever folder it was started from, so a
restart elsewhere still knows what it received.

After a crash or kill, items in ``work/`` go back through the worker: one with
a ``result.json`` is delivered without scoring again; one the node was killed
while scoring (``attempts``) :data:`MAX_SCORING_ATTEMPTS` times is kept under
``failed/`` instead of being tried again, so an image that takes the node down
(out of memory) cannot do it in a loop. Result UIDs are derived
from the source UID and the model, so a delivery repeated after a crash sends
the very same SOP instances, never new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..dicom_uids import is_valid_uid
from ..files import PARTIAL_SUFFIX, atomic_write_text, fsync_folder, remove_partials

STATES = ("incoming", "work", "done", "failed")
MIN_FREE_BYTES = 200 << 20  # refuse new images below this much free disk
MAX_SCORING_ATTEMPTS = 2  # starts of scoring one image that ended with the node gone, before it is set aside
RECEIVING = "receiving"
MAX_STORE_MIB = 400  # default largest dataset of one C-STORE: an 80-megapixel radiograph is 160 MB uncompressed


def _remove_files(folder: Path) -> int:
    """Delete what a stopped node left in ``folder`` (datasets it was receiving); how many."""
    removed = 0
    for leftover in folder.iterdir():
        try:
            leftover.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def default_spool() -> Path:
    """The per-user state folder of the node: ``$XDG_STATE_HOME/svdh/spool`` (when that is an absolute
    path, as the XDG base-directory specification requires), else ``~/.local/state/svdh/spool``."""
    from ..files import state_folder

    return state_folder() / "spool"


def item_key(sop_instance_uid: str) -> str:
    """File-name-safe key of a SOP Instance UID (the UID itself when it is a plain UID)."""
    uid = (sop_instance_uid or "").strip().rstrip("\0")
    if is_valid_uid(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


@dataclass(frozen=True)
class Counts:
    incoming: int
    work: int
    done: int
    failed: int
    undelivered: int

    @property
    def queued(self) -> int:
        return self.incoming + self.work


class Spool:
    """The folders of one node's queue."""

    def __init__(self, root: Path, max_queue: int = 500, tidy: bool = False) -> None:
        """``tidy``: the node starting: remove partial files a killed node left (never while one runs)."""
        self.root = Path(root)
        self.max_queue = max_queue
        for name in (*STATES, "results", "resend", RECEIVING):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.partials_removed = 0
        if tidy:
            self.partials_removed = remove_partials(self.root) + _remove_files(self.root / RECEIVING)

    def path(self, state: str, key: str) -> Path:
        return self.root / state / f"{key}.dcm"

    def results_dir(self, key: str) -> Path:
        return self.root / "results" / key

    def state_of(self, key: str) -> str | None:
        for state in STATES:
            if self.path(state, key).exists():
                return state
        return None

    def _count(self, state: str) -> int:
        return sum(1 for p in (self.root / state).iterdir() if p.suffix == ".dcm")

    def counts(self) -> Counts:
        undelivered = sum(
            1 for p in (self.root / "work").glob("*.dcm") if (self.results_dir(p.stem) / "result.json").exists()
        )
        return Counts(*(self._count(s) for s in STATES), undelivered=undelivered)

    def refusal(self) -> str | None:
        """Why a new image cannot be taken now (queue full, disk nearly full), or None."""
        queued = self._count("incoming") + self._count("work")
        if queued >= self.max_queue:
            return f"queue full ({queued} images waiting)"
        if shutil.disk_usage(self.root).free < MIN_FREE_BYTES:
            return "spool disk nearly full"
        return None

    @property
    def receiving(self) -> Path:
        """Where datasets are written as they arrive (on the spool's disk: never in memory, nor on a tmpfs)."""
        return self.root / RECEIVING

    def put(self, key: str, data: bytes) -> bool:
        """Queue a received file durably; False when this instance was already received."""
        if self.state_of(key) is not None:
            return False
        with self._partial(key) as (handle, name):
            handle.write(data)
            return self._claim(key, handle, name)

    def put_file(self, key: str, source: Path) -> bool:
        """Queue a dataset received into a file (``receiving/``), copied in pieces, never read into memory
        whole; False when this instance was already received."""
        if self.state_of(key) is not None:
            return False
        with self._partial(key) as (handle, name), open(source, "rb") as data:
            shutil.copyfileobj(data, handle, 1 << 20)
            return self._claim(key, handle, name)

    @contextmanager
    def _partial(self, key: str) -> Iterator[tuple[BinaryIO, str]]:
        """A partial file of this store's own in ``incoming/``, removed whatever happens."""
        descriptor, name = tempfile.mkstemp(dir=self.root / "incoming", prefix=f"{key}.", suffix=PARTIAL_SUFFIX)
        handle = os.fdopen(descriptor, "wb")
        try:
            yield handle, name
        finally:
            handle.close()
            Path(name).unlink(missing_ok=True)

    def _claim(self, key: str, handle: BinaryIO, name: str) -> bool:
        """Make the partial file durable and claim the instance's name with a hard link, which fails when
        another store of the same instance got there first: of several senders of one image, one queues it
        and the others are told it is a duplicate."""
        handle.flush()
        os.fsync(handle.fileno())
        target = self.path("incoming", key)
        try:
            os.link(name, target)
        except FileExistsError:
            return False
        if any(self.path(state, key).exists() for state in STATES if state != "incoming"):
            target.unlink(missing_ok=True)  # taken by the worker meanwhile: this copy is a duplicate
            return False
        fsync_folder(target.parent)
        return True

    # -- scoring attempts (an image that takes the node down is not tried forever) ---------------------------
    def begin_scoring(self, key: str) -> int:
        """Record, durably, that scoring this item starts; how many starts there have been, this one included
        (more than one: the node went away while scoring it before)."""
        marker = self.results_dir(key) / "attempts"
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            before = int(marker.read_text(encoding="utf-8").strip() or 0)
        except (OSError, ValueError):
            before = 0
        atomic_write_text(marker, f"{before + 1}\n")
        fsync_folder(marker.parent)
        return before + 1

    def end_scoring(self, key: str) -> None:
        """Scoring this item ended (scored or refused) with the node alive."""
        (self.results_dir(key) / "attempts").unlink(missing_ok=True)

    def next_incoming(self) -> str | None:
        """The oldest received item, moved to ``work/``."""
        entries = sorted((self.root / "incoming").glob("*.dcm"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        for entry in entries:
            try:
                entry.replace(self.path("work", entry.stem))
            except FileNotFoundError:
                continue
            return entry.stem
        return None

    def in_work(self) -> list[str]:
        """Items taken earlier and not finished (after a restart: the ones to resume)."""
        return sorted(p.stem for p in (self.root / "work").glob("*.dcm"))

    def read_result(self, key: str) -> dict[str, Any] | None:
        path = self.results_dir(key) / "result.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def write_result(self, key: str, record: dict[str, Any]) -> None:
        self.results_dir(key).mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.results_dir(key) / "result.json", json.dumps(record, indent=2) + "\n")

    def finish(self, key: str) -> None:
        """Results delivered: keep the original under ``done/``."""
        self.path("work", key).replace(self.path("done", key))

    def fail(self, key: str, reason: str) -> None:
        """Refused input: keep it under ``failed/`` with the reason."""
        atomic_write_text(self.root / "failed" / f"{key}.json", json.dumps({"reason": reason}) + "\n")
        self.path("work", key).replace(self.path("failed", key))

    # -- sending results again ------------------------------------------------------------------------------
    def received_at(self, key: str) -> float | None:
        """When an item was received (its file's modification time, kept through every move)."""
        state = self.state_of(key)
        return None if state is None else self.path(state, key).stat().st_mtime

    def done_since(self, when: float) -> list[str]:
        """Delivered items received at or after ``when`` (seconds since the epoch), oldest first."""
        found = [(p.stat().st_mtime, p.stem) for p in (self.root / "done").glob("*.dcm")]
        return [key for received, key in sorted(found) if received >= when]

    def request_resend(self, key: str) -> None:
        """Ask the node to send a delivered item's results again (it acts on the request within seconds,
        or when it next starts)."""
        atomic_write_text(self.root / "resend" / key, json.dumps({"requested": time.time()}) + "\n")

    def resend_requests(self) -> list[str]:
        return sorted(p.name for p in (self.root / "resend").iterdir() if not p.name.endswith(PARTIAL_SUFFIX))

    def reopen_for_resend(self, key: str) -> bool:
        """Put a done item back in ``work/`` with its results marked undelivered; False (and the request
        dropped) when it is not done. Safe to repeat after a crash at any step."""
        request = self.root / "resend" / key
        if self.state_of(key) == "done":
            record = self.read_result(key)
            if record is not None:
                record["delivered"] = {}
                record["resent"] = int(record.get("resent", 0)) + 1
                self.write_result(key, record)
                self.path("done", key).replace(self.path("work", key))
        reopened = self.state_of(key) == "work" and self.read_result(key) is not None
        request.unlink(missing_ok=True)
        return reopened
