"""``svdh-run serve``: a DICOM node that scores every radiograph it receives and sends the results on.

A pynetdicom C-STORE SCP (and C-ECHO) accepts CR and DX images in any transfer
syntax. Each image is written to the spool and fsynced before the C-STORE is
acknowledged; when the queue is full (or the disk nearly so) the store is
refused with status A700 (out of resources) and the sender retries later. One
worker scores the queue in arrival order: the images waiting (up to
``--batch-size``) are read and prepared on every core and scored in one model
call; then, one by one in order, it makes each one's SR and Secondary
Capture (:mod:`svdh_runtime.dicom_results`) and delivers them by C-STORE to
``--forward`` and/or into ``--outbox``; an unreachable destination is retried
with back-off while the item waits in the spool. A restart resumes where the
node stopped.

A dataset is written to the spool's disk as it arrives, never held whole in
memory, and an association whose dataset grows past ``--max-store-mib`` (or
past what the spool's disk can take) is aborted: a C-STORE announces no size,
so the bytes are counted as they come.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..change import measure_change
from ..cores import usable_cores
from ..dicom_results import PriorChange
from ..errors import InputError, MissingDependencyError, SvdhError, install_hint
from ..files import atomic_write_bytes, atomic_write_text
from ..overlay import DISPLAY_LONG_SIDE
from ..pipeline import Preparer
from ..progression import film_hands
from ..scoring import ScoreResult
from ..visits import Film, read_film
from .access import CALLING_AE_NOT_RECOGNISED, AccessPolicy, AllowRule, TlsFiles, Verdict
from .priors import Prior, PriorIndex
from .spool import MAX_SCORING_ATTEMPTS, MAX_STORE_MIB, MIN_FREE_BYTES, Spool, item_key

log = logging.getLogger(__name__)
IMAGE_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
)
STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STORE_SUCCESS = {0x0000, 0xB000, 0xB006, 0xB007}  # success and warnings
HEARTBEAT_S = 2.0
RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0


class DeliveryError(SvdhError):
    """Results could not be sent to the forward destination (retried later)."""


@dataclass(frozen=True)
class Destination:
    """A DICOM peer given as ``HOST:PORT:AET``."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, text: str) -> Destination:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
            raise ValueError(f"{text!r} is not HOST:PORT:AET")
        host, port, title = parts[0], int(parts[1]), parts[2]
        if not 0 < port < 65536 or len(title) > 16:
            raise ValueError(f"{text!r}: port must be 1-65535 and the AE title at most 16 characters")
        return cls(host, port, title)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.ae_title}"


@dataclass
class NodeOptions:
    spool: Path
    ae_title: str = "SVDH"
    port: int = 11112
    bind: str = "0.0.0.0"
    max_queue: int = 500
    forward: Destination | None = None
    outbox: Path | None = None
    model: Path | None = None
    backend: str = "auto"
    threads: int | None = None
    allow: tuple[AllowRule, ...] = ()  # who may call (empty: anyone)
    tls: TlsFiles | None = None
    forward_tls: bool = False  # send results to --forward over DICOM TLS too
    max_store_bytes: int = MAX_STORE_MIB << 20  # one dataset larger than this is refused (association aborted)
    batch_size: int = 8  # waiting images taken together: prepared on every core, scored in one model call


@dataclass
class _Retry:
    due: float = 0.0
    delay: float = RETRY_FIRST_S


def _require_pacs_packages() -> None:
    for name in ("pynetdicom", "highdicom"):
        try:
            __import__(name)
        except ImportError:
            raise MissingDependencyError(f"the PACS node needs {name}: {install_hint('pacs')}") from None


class PacsNode:
    """Receiver, worker and heartbeat of one node; :meth:`run` until :meth:`stop` (or SIGTERM/SIGINT)."""

    def __init__(self, options: NodeOptions, log: Callable[[str], None]) -> None:
        _require_pacs_packages()
        from ..backends import select_backend
        from ..bundle import load_bundle
        from ..scoring import Scorer

        self.options, self.log = options, log
        self.spool = Spool(options.spool, options.max_queue, tidy=True)
        if self.spool.partials_removed:
            log(f"removed {self.spool.partials_removed} partial file(s) a stopped node left in the spool")
        if options.outbox is not None:
            options.outbox.mkdir(parents=True, exist_ok=True)
        self.bundle = load_bundle(options.model)
        selection = select_backend(options.backend, self.bundle, threads=options.threads)
        self.backend_name = selection.backend.name
        self.scorer = Scorer(self.bundle, selection.backend)
        self._preparer = Preparer(self.bundle.manifest.preprocessing, display_long_side=DISPLAY_LONG_SIDE)
        self._prepare_pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="svdh-prepare")
        self.priors = PriorIndex(self.spool.root / "priors")
        self.paired = None
        if self.bundle.manifest.outputs.paired is not None:
            from ..paired import PairedGraph

            self.paired = PairedGraph(self.bundle, options.threads)
        log(
            f"model {self.bundle.manifest.name} {self.bundle.manifest.version} on {self.backend_name} "
            f"({selection.reason})"
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._retries: dict[str, _Retry] = {}
        self._server = None
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None
        self.started = time.time()
        self.access = AccessPolicy(options.ae_title, options.allow)
        self._client_tls = options.tls.client_context() if options.forward_tls and options.tls else None
        self.stats = {
            "received": 0,
            "refused_busy": 0,
            "duplicates": 0,
            "scored": 0,
            "failed": 0,
            "delivered": 0,
            "resent": 0,
            "rejected_associations": 0,
            "aborted_too_large": 0,
            "set_aside": 0,
        }
        self._arriving: dict[int, int] = {}  # bytes received per association since its last C-STORE
        self._restore: tuple[bool, str | None] | None = None  # pynetdicom's and tempfile's settings before

    # -- receiving -----------------------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        self._arriving[id(event.assoc)] = 0  # the next dataset is counted from here
        key = item_key(str(event.request.AffectedSOPInstanceUID))
        log.debug("C-STORE %s from %s", key, getattr(event.assoc.requestor, "ae_title", "?"))
        if self.spool.state_of(key) is not None:
            return self._duplicate(key)
        busy = self.spool.refusal()
        if busy is not None:
            self.stats["refused_busy"] += 1
            self.log(f"refused {key}: {busy} (status A700; the sender should retry)")
            return STATUS_OUT_OF_RESOURCES
        try:
            arrived = event.dataset_path  # written to receiving/ as it came
        except AttributeError:  # not receiving into files (a node set up by hand)
            arrived = None
        try:
            fresh = (
                self.spool.put(key, event.encoded_dataset()) if arrived is None else self.spool.put_file(key, arrived)
            )
        except OSError as exc:
            self.last_error = f"spool write failed: {exc.strerror or exc}"
            self.log(f"refused {key}: {self.last_error}")
            return STATUS_OUT_OF_RESOURCES
        if not fresh:
            return self._duplicate(key)
        self.stats["received"] += 1
        self._wake.set()
        return STATUS_OK

    def _on_data(self, event: Any) -> None:
        """Count what an association sends; abort it when one dataset outgrows the limit or the disk."""
        assoc = event.assoc
        before = self._arriving.get(id(assoc), 0)
        now = self._arriving[id(assoc)] = before + len(event.data)
        if now >> 20 == before >> 20:  # judged once per MiB
            return
        limit = self.options.max_store_bytes
        if now > limit:
            why = f"its dataset passed {limit >> 20} MiB (--max-store-mib)"
        elif shutil.disk_usage(self.spool.root).free - MIN_FREE_BYTES < 1 << 20:
            why = "the spool disk is nearly full"
        else:
            return
        if getattr(assoc, "_sent_abort", False):
            return
        self.stats["aborted_too_large"] += 1
        self.last_error = f"aborted an association: {why}"
        calling = str(getattr(assoc.requestor, "ae_title", "?")).strip()
        self.log(f"aborted association from {calling!r} at {assoc.requestor.address}: {why} (A-ABORT)")
        assoc.abort(block=False)  # from the connection's own thread: never wait on it

    def _on_closed(self, event: Any) -> None:
        """The connection is gone: forget its count, and remove a dataset it left half received."""
        self._arriving.pop(id(event.assoc), None)
        message = getattr(getattr(event.assoc, "dimse", None), "message", None)
        unfinished = getattr(message, "_data_set_file", None)
        if unfinished is not None:
            try:
                unfinished.close()
                os.unlink(unfinished.name)
            except OSError:
                pass  # a starting node clears receiving/

    def _duplicate(self, key: str) -> int:
        """An instance received before is acknowledged but not queued (nor scored) again."""
        self.stats["duplicates"] += 1
        hint = "; `svdh-run resend` sends its results again" if self.spool.state_of(key) == "done" else ""
        self.log(f"{key}: already received; not queued again{hint}")
        return STATUS_OK

    def _on_association_requested(self, event: Any) -> None:
        """Reject, at association time, callers the access rules do not know and a wrong called AE title."""
        from pynetdicom import evt

        association = event.assoc
        request = association.requestor.primitive
        calling, address = str(request.calling_ae_title).strip(), str(association.requestor.address)
        try:
            verdict = self.access.check(calling, str(request.called_ae_title), address)
        except Exception:  # fail closed: an association the rules could not judge is not let in
            verdict = Verdict(CALLING_AE_NOT_RECOGNISED, "the access rules could not judge this association")
        if verdict is None:
            return
        self.stats["rejected_associations"] += 1
        self.log(f"rejected association from {calling!r} at {address}: {verdict.reason} (A-ASSOCIATE-RJ)")
        association.acse.send_reject(0x01, 0x01, verdict.diagnostic)  # rejected permanent, by the service user
        association.is_rejected = True
        evt.trigger(association, evt.EVT_REJECTED, {})
        association.kill()

    def _on_tls_failure(self, address: str, reason: str) -> None:
        self.stats["rejected_associations"] += 1
        self.log(f"rejected connection from {address}: TLS handshake failed ({reason})")

    def start_receiving(self) -> None:
        """Listen for associations (C-STORE of CR/DX images in any transfer syntax, C-ECHO)."""
        import tempfile

        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
        from pynetdicom.sop_class import Verification

        # datasets go to the spool's disk as they arrive (pynetdicom writes them to a temporary file)
        self._restore = (_config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir)
        _config.STORE_RECV_CHUNKED_DATASET = True
        tempfile.tempdir = str(self.spool.receiving)

        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_pdu_size = 0
        ae.require_called_aet = True  # also checked, with a log line, in _on_association_requested
        for sop_class in IMAGE_STORAGE:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        tls = self.options.tls
        handlers = [
            (evt.EVT_REQUESTED, self._on_association_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        try:
            self._server = ae.start_server(
                (self.options.bind, self.options.port),
                block=False,
                evt_handlers=handlers,
                ssl_context=tls.server_context(self._on_tls_failure) if tls else None,
            )
        except OSError as exc:
            raise SvdhError(
                f"cannot listen on {self.options.bind}:{self.options.port}: {exc.strerror or exc}"
            ) from None
        everywhere = " (all interfaces)" if self.options.bind in ("", "0.0.0.0", "::") else ""
        self.log(
            f"listening as {self.options.ae_title} on {self.options.bind}:{self.options.port}{everywhere}; "
            f"{tls.describe() if tls else 'no TLS'}; {self.access.describe()}; spool {self.spool.root}"
        )

    # -- scoring and delivery -----------------------------------------------------------------------------
    def _score(self, key: str, scored: ScoreResult | None = None) -> dict[str, Any] | None:
        """Score one spooled image (or take ``scored``, its result from a batch) and persist its SR and SC;
        None when the image is refused."""
        from ..dicom_results import write_dicom_results
        from ..overlay import render_overlay

        path = self.spool.path("work", key)
        result = scored if scored is not None else self.scorer.score_file(path)
        if result.status != "ok":
            self._refuse(key, result.reason or "could not be scored")
            return None
        try:
            film = read_film(path)
            prior = self._change_since_prior(film, result)
            picture = render_overlay(result, self.bundle.manifest)
            folder = self.spool.results_dir(key)
            folder.mkdir(parents=True, exist_ok=True)
            files = (folder / "sr.dcm", folder / "sc.dcm")
            manifest, sha256 = self.bundle.manifest, self.bundle.model_sha256
            write_dicom_results(path, result.prediction, np.asarray(picture), manifest, sha256, files, prior)
        except InputError as exc:  # ours: names the attribute, never its value
            self._refuse(key, f"results could not be made: {exc}")
            return None
        except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a library's message may quote values
            self._refuse(key, f"results could not be made from this image's header ({type(exc).__name__})")
            return None
        prediction = result.prediction
        record = {
            "sop_instance_uid": key,
            "score": round(prediction.score, 3),
            "severity": prediction.severity,
            "model": f"{self.bundle.manifest.name} {self.bundle.manifest.version}",
            "backend": self.backend_name,
            "delivered": {},
        }
        if prediction.interval is not None:
            record["score_interval"] = prediction.interval.to_dict()
        if prior is not None:
            record["change_from_prior"] = {"prior": prior.sop_instance_uid, "route": prior.route,
                                           **prior.change.to_dict()}  # fmt: skip
        self.spool.write_result(key, record)
        self._remember(film, result)
        self.stats["scored"] += 1
        since = "" if prior is None else f"; {prior.change.total:+.1f} since the prior ({prior.route})"
        self.log(f"scored {key}: SvdH {prediction.score:.1f} / 280, {prediction.severity}{since}")
        return record

    def _change_since_prior(self, film: Film, result: ScoreResult) -> PriorChange | None:
        """The change since the latest result of this patient showing the same hands, if the node has one."""
        if film.patient_id is None or film.date is None:
            return None
        hands = film_hands(film, result)
        prior = self.priors.latest_before(film.patient_id, film.when, hands, film.sop_instance)
        if prior is None:
            return None
        score = result.prediction.score
        canvas = self.priors.canvas(prior) if self.paired is not None else None
        if canvas is not None and result.prediction.areas is not None:
            route, total = "paired", self.paired.change(canvas, result.prepared.canvas).total
        else:
            route, total = "difference", score - prior.score
        years = (film.date - prior.when[0]).days / 365.25
        calibration = self.bundle.manifest.outputs.change_for(route)
        change = measure_change(calibration, total, (score + prior.score) / 2, years, None)
        return PriorChange(prior.sop_class_uid, prior.sop_instance_uid, prior.study_instance_uid,
                           prior.series_instance_uid, change, route)  # fmt: skip

    def _remember(self, film: Film, result: ScoreResult) -> None:
        """Keep this result in the prior index (a patient's later films will be compared with it)."""
        if film.patient_id is None or film.date is None or not film.sop_instance:
            return
        areas = result.prediction.areas
        entry = Prior(
            sop_instance_uid=film.sop_instance, sop_class_uid=film.sop_class,
            study_instance_uid=film.study or "", series_instance_uid=film.series,
            date=film.date.isoformat(), time=film.time, hands=film_hands(film, result),
            score=round(result.prediction.score, 4), grades=dict(areas.graded) if areas is not None else {},
        )  # fmt: skip
        try:
            self.priors.add(film.patient_id, entry, result.prepared.canvas)
        except OSError as exc:
            self.log(f"could not keep the result for later comparisons ({exc.strerror or exc})")

    def _score_once_more(
        self, key: str, scored: ScoreResult | None = None, attempts: int | None = None
    ) -> dict[str, Any] | None:
        """Score an item unless the node went away while scoring it too often (an image that runs it out of
        memory would otherwise take it down at every start): such an item is kept under failed/. ``scored``
        and ``attempts``: its result and its count of starts, when a batch began scoring it."""
        attempts = self.spool.begin_scoring(key) if attempts is None else attempts
        if attempts > MAX_SCORING_ATTEMPTS:
            self.stats["set_aside"] += 1
            self._refuse(
                key,
                f"the node stopped {attempts - 1} times while scoring it (out of memory, or killed); set aside, "
                "not tried again",
            )
            self.spool.end_scoring(key)
            return None
        try:
            return self._score(key, scored)
        finally:
            self.spool.end_scoring(key)  # alive: scored, or refused with its reason

    def _refuse(self, key: str, reason: str) -> None:
        self.spool.fail(key, reason)
        self.stats["failed"] += 1
        self.log(f"refused {key}: {reason}")

    def _send(self, files: list[Path]) -> None:
        import pydicom
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE
        from pynetdicom.sop_class import Comprehensive3DSRStorage, SecondaryCaptureImageStorage

        destination = self.options.forward
        ae = AE(ae_title=self.options.ae_title)
        for sop_class in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = (self._client_tls, destination.host) if self._client_tls is not None else None
        association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
        if not association.is_established:
            raise DeliveryError(f"cannot associate with {destination}")
        try:
            for file in files:
                status = association.send_c_store(pydicom.dcmread(file))
                code = getattr(status, "Status", None)
                if code not in STORE_SUCCESS:
                    raise DeliveryError(f"{destination} answered {file.name} with status {code!r}")
        finally:
            if association.is_established:
                association.release()

    def _deliver(self, key: str, record: dict[str, Any]) -> bool:
        """Send or write the results; True when every destination has them."""
        folder = self.spool.results_dir(key)
        files = [folder / "sr.dcm", folder / "sc.dcm"]
        delivered = record.setdefault("delivered", {})
        if self.options.outbox is not None and not delivered.get("outbox"):
            for file in files:
                atomic_write_bytes(self.options.outbox / f"{key}.{file.name}", file.read_bytes())
            delivered["outbox"] = True
            self.spool.write_result(key, record)
        if self.options.forward is not None and not delivered.get("forward"):
            try:
                self._send(files)
            except Exception as exc:  # network, peer refusals, codec mismatches: all retried later
                self._retry_later(key, f"results not delivered ({' '.join(str(exc).split())[:160]})")
                return False
            delivered["forward"] = True
            self.spool.write_result(key, record)
        self._retries.pop(key, None)
        self.spool.finish(key)
        self.stats["delivered"] += 1
        return True

    def _retry_later(self, key: str, why: str) -> None:
        retry = self._retries.setdefault(key, _Retry())
        wait = retry.delay
        retry.due, retry.delay = time.monotonic() + wait, min(wait * 2, RETRY_MAX_S)
        self.last_error = f"{key}: {why}"
        self.log(f"{key}: {why}; retrying in {wait:.0f} s")

    def _score_batch(self, keys: list[str]) -> tuple[dict[str, int], dict[str, ScoreResult]]:
        """Begin scoring ``keys`` together: each start counted durably first (so an image that takes the node
        down is found out; after a restart, items are resumed one at a time), then every image read and
        prepared on the pool and scored in one model call. Their counts of starts, and their results (none
        when the batch failed: each is then scored alone)."""
        attempts = {key: self.spool.begin_scoring(key) for key in keys}
        todo = [key for key in keys if attempts[key] <= MAX_SCORING_ATTEMPTS]
        try:
            results = list(self._prepare_pool.map(self._preparer, [self.spool.path("work", k) for k in todo]))
            self.scorer.infer_batch(results)
        except Exception as exc:  # noqa: BLE001 - the type only: a library's message can quote header values
            self.log(f"a batch of {len(todo)} could not be scored together ({type(exc).__name__}); one at a time")
            return attempts, {}
        return attempts, dict(zip(todo, results))

    def _process_batch(self, keys: list[str]) -> None:
        """Score several waiting items together, then make, keep and deliver each one's results in order."""
        if len(keys) == 1:
            self._process(keys[0])
            return
        attempts, results = self._score_batch(keys)
        for key in keys:
            self._process(key, results.get(key), attempts[key])

    def _process(self, key: str, scored: ScoreResult | None = None, attempts: int | None = None) -> None:
        """Score (unless scored before) and deliver one item; no failure stops the worker. ``scored`` and
        ``attempts``: what a batch began for it (:meth:`_score_batch`)."""
        try:
            record = self.spool.read_result(key)
            if record is None:
                record = self._score_once_more(key, scored, attempts)
            if record is not None:
                self._deliver(key, record)
        except OSError as exc:  # the spool's disk: keep the item, try again later
            self._retry_later(key, f"left in the queue after a disk error ({exc.strerror or exc})")
        except Exception as exc:  # anything else is about this image: keep it under failed/ with the reason
            # the type only: a library's message can quote header values (patient data)
            reason = f"could not be processed ({type(exc).__name__})"
            try:
                self._refuse(key, reason)
            except OSError:
                self._retry_later(key, reason)
        try:
            self._write_status()
        except OSError:
            pass

    def _resend_requested(self) -> None:
        """Deliver again the results an administrator asked for (``svdh-run resend``); not scored again."""
        for key in self.spool.resend_requests():
            if self._stop.is_set():
                return
            state = self.spool.state_of(key)
            if not self.spool.reopen_for_resend(key):
                self.log(f"{key}: resend asked, but it is {state or 'not in the spool'}; nothing sent again")
                continue
            self.stats["resent"] += 1
            self.log(f"{key}: sending its results again, as asked")
            self._process(key)

    def _retry_due(self) -> None:
        now = time.monotonic()
        for key in self.spool.in_work():
            retry = self._retries.get(key)
            if retry is not None and retry.due <= now and not self._stop.is_set():
                self._process(key)

    def _take_waiting(self) -> list[str]:
        """Up to a batch of the oldest received items, moved to ``work/``."""
        keys: list[str] = []
        while len(keys) < self.options.batch_size and not self._stop.is_set():
            key = self.spool.next_incoming()
            if key is None:
                break
            keys.append(key)
        return keys

    def _work(self) -> None:
        resumed = self.spool.in_work()
        waiting = self.spool.counts().incoming
        if resumed or waiting:
            self.log(f"queue on start: {waiting} waiting, {len(resumed)} to finish from the last run")
        for key in resumed:
            if self._stop.is_set():
                return
            self._process(key)
        while not self._stop.is_set():
            self._resend_requested()
            keys = self._take_waiting()
            if keys:
                self._process_batch(keys)
                continue
            self._retry_due()
            self._wake.wait(0.5)
            self._wake.clear()

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        counts = self.spool.counts()
        return {
            "ae_title": self.options.ae_title,
            "bind": self.options.bind,
            "port": self.options.port,
            "tls": self.options.tls is not None,
            "spool": str(self.spool.root),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "heartbeat": time.time(),
            "model": f"{self.bundle.manifest.name} {self.bundle.manifest.version}",
            "backend": self.backend_name,
            "forward": str(self.options.forward) if self.options.forward else None,
            "outbox": str(self.options.outbox) if self.options.outbox else None,
            "queue": {"waiting": counts.incoming, "in_work": counts.work, "limit": self.spool.max_queue},
            "done": counts.done,
            "failed": counts.failed,
            "undelivered": counts.undelivered,
            "since_start": dict(self.stats),
            "last_error": self.last_error,
            "refusing_new_images": self.spool.refusal(),  # why stores get A700 now; null when they do not
            "running": not self._stop.is_set(),
        }

    def _write_status(self) -> None:
        atomic_write_text(self.spool.root / "status.json", json.dumps(self.status(), indent=2) + "\n")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._write_status()
            except OSError:
                pass

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self, receive: bool = True, work: bool = True) -> None:
        if receive:
            self.start_receiving()
        targets = [self._heartbeat] + ([self._work] if work else [])
        for target in targets:
            thread = threading.Thread(target=target, name=f"svdh-{target.__name__.strip('_')}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._write_status()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=60)
        self._write_status()
        self._prepare_pool.shutdown(wait=True)
        self.scorer.backend.close()
        if self._restore is not None:
            import tempfile

            from pynetdicom import _config

            _config.STORE_RECV_CHUNKED_DATASET, tempfile.tempdir = self._restore
            self._restore = None

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT; the image being scored is finished first."""
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.start()
        while not stop.wait(0.5):
            pass
        self.log("stopping: finishing the current image")
        self.stop()


def read_status(spool: Path) -> dict[str, Any]:
    """The node's last status (``status.json`` in its spool)."""
    try:
        return json.loads((Path(spool) / "status.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{spool}: no node status here (is this the --spool of a node?)") from None
    except (OSError, json.JSONDecodeError):
        raise InputError(f"{spool}/status.json is unreadable") from None
