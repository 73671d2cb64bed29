"""The PACS node against dcmtk, a DICOM implementation this project did not write.

dcmtk's ``storescu``/``echoscu`` send and ``storescp`` receives the results
(``pacs_peers``). The node runs as its own process (``svdh-run serve``), as at
a site.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from conftest import run_cli
from pacs_peers import ECHOSCU, STORESCU, Node, Receiver, free_port, needs_dcmtk, wait_for

pytestmark = needs_dcmtk


@pytest.fixture()
def sources(phantoms: Path, tmp_path: Path) -> dict[str, Path]:
    """Phantom radiographs as a modality would send them: uncompressed, JPEG-LS and JPEG 2000 lossless."""
    images = sorted((phantoms / "images").glob("*.dcm"))
    folders = {}
    for name, syntax, picked in (
        ("uncompressed", None, images[0:2]),
        ("jpeg-ls", JPEGLSLossless, images[2:4]),
        ("jpeg2000", JPEG2000Lossless, images[4:6]),
    ):
        folder = tmp_path / "send" / name
        folder.mkdir(parents=True)
        for image in picked:
            ds = pydicom.dcmread(image)
            if syntax is not None:
                ds.compress(syntax)
            ds.save_as(folder / image.name, enforce_file_format=True)
        folders[name] = folder
    return folders


def _uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in folder.rglob("*.dcm")}


def _received(receiver: Receiver) -> tuple[dict[str, list[str]], int]:
    """Source SOP Instance UID -> SOP Instance UIDs of the SRs that reference it; and the number of SCs."""
    reports: dict[str, list[str]] = {}
    captures = 0
    for path in receiver.files():
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7":
            captures += 1
            continue
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        source = str(evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        reports.setdefault(source, []).append(str(ds.SOPInstanceUID))
    return reports, captures


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    peer = Receiver(tmp_path / "received")
    yield peer
    peer.stop()


def test_node_scores_every_image_and_sends_one_sr_and_one_sc_back(
    sources: dict[str, Path], receiver: Receiver, tmp_path: Path
) -> None:
    blank_folder = tmp_path / "send" / "blank"
    blank_folder.mkdir()
    blank = pydicom.dcmread(next(sources["uncompressed"].glob("*.dcm")))
    blank.SOPInstanceUID = blank.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    blank.PixelData = bytes(len(blank.PixelData))
    blank.save_as(blank_folder / "blank.dcm", enforce_file_format=True)
    node = Node(tmp_path / "spool", receiver, None, "--log-level", "debug")
    try:
        assert subprocess.run([ECHOSCU, "-aec", "SVDH", "127.0.0.1", str(node.port)], timeout=30).returncode == 0
        for name, flag in (("uncompressed", None), ("jpeg-ls", "-xt"), ("jpeg2000", "-xv"), ("blank", None)):
            done = node.send(sources.get(name, blank_folder), *([flag] if flag else []))
            assert done.returncode == 0, done.stderr
        expected = set().union(*(_uids(folder) for folder in sources.values()))
        wait_for(lambda: len(receiver.files()) >= 2 * len(expected), 180, "the results")
        wait_for(lambda: len(list((tmp_path / "spool" / "failed").glob("*.dcm"))) == 1, 30, "the blank image")
        reports, captures = _received(receiver)
        assert set(reports) == expected and all(len(r) == 1 for r in reports.values())
        assert captures == len(expected) and len(receiver.files()) == 2 * len(expected)
        reason = json.loads(next((tmp_path / "spool" / "failed").glob("*.json")).read_text())["reason"]
        assert "blank" in reason
        status_file = tmp_path / "spool" / "status.json"
        wait_for(lambda: json.loads(status_file.read_text())["failed"] == 1, 10, "the status to catch up")
        status = run_cli("svdh-run", "status", "--spool", str(tmp_path / "spool"))
        assert status.returncode == 0, status.stderr
        record = json.loads(status.stdout)
        assert record["state"] == "up" and record["done"] == len(expected) and record["failed"] == 1
    finally:
        node.stop()
    status = run_cli("svdh-run", "status", "--spool", str(tmp_path / "spool"))
    assert status.returncode == 4 and "not running" in status.stderr
    log = node.log.read_text()
    assert "Traceback" not in log and "DEBUG" in log
    sent = [pydicom.dcmread(p, stop_before_pixels=True) for folder in sources.values() for p in folder.glob("*.dcm")]
    assert all(str(ds.PatientID) not in log and str(ds.PatientName) not in log for ds in sent), "no patient data"


def test_a_killed_node_resumes_without_losing_or_duplicating_anything(
    phantoms: Path, receiver: Receiver, tmp_path: Path
) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    for image in sorted((phantoms / "images").glob("*.dcm"))[:10]:
        shutil.copy(image, batch / image.name)
    expected = _uids(batch)
    node = Node(tmp_path / "spool", receiver)
    done = node.send(batch)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: len(receiver.files()) >= 2, 120, "the first results")
    node.kill()  # SIGKILL mid-batch: no chance to tidy up
    spool = tmp_path / "spool"
    waiting, in_work = (list((spool / state).glob("*.dcm")) for state in ("incoming", "work"))
    left = waiting + in_work
    assert left, "the kill came mid-batch"
    assert len(left) + len(list((spool / "done").glob("*.dcm"))) == len(expected), "every image is on disk"
    node = Node(spool, receiver, node.port)
    try:
        wait_for(lambda: len(list((spool / "done").glob("*.dcm"))) == len(expected), 180, "the resumed queue")
        wait_for(lambda: len(receiver.files()) >= 2 * len(expected), 30, "the results")
        time.sleep(1.0)  # anything sent twice would arrive now
        reports, captures = _received(receiver)
        assert set(reports) == expected and all(len(set(r)) == 1 for r in reports.values())
        assert captures == len(expected) and len(receiver.files()) == 2 * len(expected)
        assert f"queue on start: {len(waiting)} waiting, {len(in_work)} to finish" in node.log.read_text()
    finally:
        node.stop()


def test_full_queue_refuses_with_out_of_resources_and_keeps_what_it_took(
    sources: dict[str, Path], receiver: Receiver, tmp_path: Path
) -> None:
    from svdh_runtime.pacs.node import Destination, NodeOptions, PacsNode

    port = free_port()
    options = NodeOptions(
        spool=tmp_path / "spool", port=port, max_queue=2, forward=Destination("127.0.0.1", receiver.port, "RECV")
    )
    messages: list[str] = []
    node = PacsNode(options, log=messages.append)
    node.start(receive=True, work=False)  # receive only: nothing leaves the queue
    try:
        command = [STORESCU, "-aec", "SVDH", "+sd", "+r", "127.0.0.1", str(port)]
        subprocess.run([*command, str(sources["uncompressed"])], capture_output=True, timeout=60)
        done = subprocess.run(
            [*command, "-v", "-xt", str(sources["jpeg-ls"])], capture_output=True, text=True, timeout=60
        )
        assert done.returncode != 0 and "Refused: OutOfResources" in done.stderr, done.stderr  # status A700
        assert len(list((tmp_path / "spool" / "incoming").glob("*.dcm"))) == 2
        assert node.stats["refused_busy"] >= 1 and any("queue full" in m for m in messages)
        again = subprocess.run([*command, str(sources["uncompressed"])], capture_output=True, timeout=60)
        assert again.returncode == 0 and node.stats["duplicates"] == 2, "a resent image is not queued twice"
    finally:
        node.stop()
    assert os.listdir(receiver.folder) == []


def test_results_wait_in_the_spool_while_the_destination_is_down(phantoms: Path, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], batch / "one.dcm")
    destination = Receiver.__new__(Receiver)  # not listening yet: only its address
    destination.folder, destination.port = tmp_path / "received", free_port()
    node = Node(tmp_path / "spool", destination)
    status_file = tmp_path / "spool" / "status.json"
    try:
        assert node.send(batch).returncode == 0
        # "undelivered" counts a scored item from the moment its results exist, before the first attempt:
        # wait for the attempt's error too (the periodic status can fall between the two)
        wait_for(
            lambda: (status := json.loads(status_file.read_text()))["undelivered"] == 1 and status["last_error"],
            60,
            "a failed delivery",
        )
        assert "not delivered" in json.loads(status_file.read_text())["last_error"]
        receiver = Receiver(tmp_path / "received", destination.port)
        try:
            wait_for(lambda: len(receiver.files()) == 2, 60, "the retried delivery")
            wait_for(lambda: json.loads(status_file.read_text())["done"] == 1, 10, "the item to finish")
        finally:
            receiver.stop()
    finally:
        node.stop()


def test_resend_delivers_the_same_results_again_without_scoring_again(phantoms: Path, tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(sorted((phantoms / "images").glob("*.dcm"))[0], batch / "one.dcm")
    (uid,) = _uids(batch)
    receiver = Receiver(tmp_path / "received", None, "+uf")  # unique file names: a second copy is kept
    node = Node(tmp_path / "spool", receiver)
    try:
        assert node.send(batch).returncode == 0
        wait_for(lambda: len(receiver.files()) == 2, 120, "the first results")
        status_file = tmp_path / "spool" / "status.json"
        # delivered is not yet done: the worker files the item under done/ just after the peer acknowledged it
        wait_for(lambda: json.loads(status_file.read_text())["done"] == 1, 10, "the item to finish")
        first = [str(pydicom.dcmread(p).SOPInstanceUID) for p in receiver.files()]
        again = node.send(batch)  # the PACS re-sends the study: acknowledged, nothing comes back
        assert again.returncode == 0
        time.sleep(1.5)
        assert len(receiver.files()) == 2 and "svdh-run resend" in node.log.read_text()
        done = run_cli("svdh-run", "resend", uid, "--spool", str(tmp_path / "spool"))
        assert done.returncode == 0 and "within seconds" in done.stderr, done.stderr
        wait_for(lambda: len(receiver.files()) == 4, 60, "the results sent again")
        resent = [str(pydicom.dcmread(p).SOPInstanceUID) for p in receiver.files()]
        assert sorted(resent) == sorted(first * 2), "the very same SR and SC instances"
        wait_for(lambda: json.loads(status_file.read_text())["since_start"]["resent"] == 1, 10, "the status")
        status = json.loads(status_file.read_text())
        assert status["since_start"]["scored"] == 1 and status["done"] == 1, "delivered again, not scored again"
    finally:
        node.stop()
        receiver.stop()
    assert f"{uid}: sending its results again, as asked" in node.log.read_text()


def test_a_follow_up_reports_the_change_since_the_prior_and_references_it(receiver: Receiver, tmp_path: Path) -> None:
    from svdh_trainer.phantom.generate import generate
    from svdh_trainer.phantom.longitudinal import Schedule

    visits = tmp_path / "visits"
    generate(visits, 2, 47, layout="both", workers=1, schedule=Schedule(2, 1.0))
    baseline, followup = tmp_path / "send" / "baseline", tmp_path / "send" / "followup"
    for folder, visit in ((baseline, "-V1"), (followup, "-V2")):
        folder.mkdir(parents=True)
        for path in (visits / "images").glob(f"*{visit}.dcm"):
            shutil.copy(path, folder / path.name)
    node = Node(tmp_path / "spool", receiver)
    try:
        assert node.send(baseline).returncode == 0
        wait_for(lambda: len(receiver.files()) >= 4, 180, "the baseline results")
        assert node.send(followup).returncode == 0
        wait_for(lambda: len(receiver.files()) >= 8, 180, "the follow-up results")
    finally:
        node.stop()
    prior_of = {}
    for path in baseline.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        prior_of[str(ds.PatientID)] = str(ds.SOPInstanceUID)
    followups = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in followup.glob("*.dcm")}
    checked = 0
    for path in receiver.files():
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7":
            continue
        source = str(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                     .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)  # fmt: skip
        text = str(ds)
        if source not in followups:
            assert "SVDH-CHANGE" not in text  # a baseline has no prior
            continue
        prior = prior_of[str(ds.PatientID)]
        assert "SVDH-CHANGE" in text and "Change of the SvdH score since the prior" in text
        other = ds.PertinentOtherEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert str(other.ReferencedSOPInstanceUID) == prior
        assert prior in text  # the change group's source images name the prior instance
        checked += 1
    assert checked == 2
    stored = " ".join(
        p.name + (p.read_text() if p.suffix == ".json" else "") for p in (tmp_path / "spool" / "priors").iterdir()
    )
    assert all(pid not in stored for pid in prior_of)  # the index is pseudonymised
    log = node.log.read_text()
    assert "since the prior" in log and all(pid not in log for pid in prior_of)
