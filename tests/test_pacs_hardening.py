"""The PACS node against what a hostile sender or a box short of memory does to it: each with inputs made here.

An image that takes the node down is set aside after two tries, a dataset is
written to disk as it arrives and bounded in size, the disk's free space is
watched while it arrives, and no library warning prints what a sender put in
a UID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from pacs_peers import STORESCU, Node, Receiver, free_port, needs_dcmtk, wait_for

pytestmark = needs_dcmtk


@pytest.fixture()
def receiver(tmp_path: Path) -> Receiver:
    peer = Receiver(tmp_path / "received")
    yield peer
    peer.stop()


def _radiograph(phantoms: Path, folder: Path, name: str, upscale: int = 1, **header: object) -> Path:
    """A phantom radiograph, ``upscale`` times finer (the same hand on a finer detector), with a new UID."""
    ds = pydicom.dcmread(sorted((phantoms / "images").glob("*.dcm"))[0])
    if upscale > 1:
        pixels = np.kron(ds.pixel_array, np.ones((upscale, upscale), np.uint16))
        ds.PixelData, (ds.Rows, ds.Columns) = pixels.tobytes(), pixels.shape
        spacing = f"{float(ds.PixelSpacing[0]) / upscale:.5f}"
        ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def _store(port: int, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([STORESCU, "-aec", "SVDH", "127.0.0.1", str(port), str(path)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_an_image_that_takes_the_node_down_twice_is_set_aside_not_tried_forever(
    phantoms: Path, receiver: Receiver, tmp_path: Path
) -> None:
    heavy = _radiograph(phantoms, tmp_path / "send", "heavy.dcm", upscale=5)  # 67 megapixels: seconds to read
    key = str(pydicom.dcmread(heavy, stop_before_pixels=True).SOPInstanceUID)
    spool = tmp_path / "spool"
    attempts = spool / "results" / key / "attempts"
    node = Node(spool, receiver)
    assert _store(node.port, heavy).returncode == 0
    for start in (1, 2):  # the out-of-memory killer's way: SIGKILL while the image is being scored
        wait_for(lambda s=start: attempts.is_file() and attempts.read_text().strip() == str(s), 60, "scoring")
        node.kill()
        assert (spool / "work" / f"{key}.dcm").is_file() and not (spool / "results" / key / "result.json").exists()
        node = Node(spool, receiver, node.port)
    try:
        wait_for(lambda: (spool / "failed" / f"{key}.json").is_file(), 30, "the image to be set aside")
        reason = json.loads((spool / "failed" / f"{key}.json").read_text())["reason"]
        assert (
            reason == "the node stopped 2 times while scoring it (out of memory, or killed); set aside, not tried again"
        )
        assert not attempts.exists()
        normal = _radiograph(phantoms, tmp_path / "send", "normal.dcm")
        assert _store(node.port, normal).returncode == 0
        wait_for(lambda: len(receiver.files()) == 2, 60, "the next image's results")  # the node goes on
        status = json.loads((spool / "status.json").read_text())
        assert status["since_start"]["set_aside"] == 1 and status["failed"] == 1
    finally:
        node.stop()


def test_a_node_short_of_memory_refuses_the_image_and_goes_on(
    phantoms: Path, receiver: Receiver, tmp_path: Path
) -> None:
    heavy = _radiograph(phantoms, tmp_path / "send", "heavy.dcm", upscale=5)  # scoring it takes ~2.3 GB
    key = str(pydicom.dcmread(heavy, stop_before_pixels=True).SOPInstanceUID)
    spool = tmp_path / "spool"
    node = Node(spool, receiver, memory_cap=1536 << 20)  # the idle node takes ~0.6 GB of address space
    try:
        assert _store(node.port, heavy).returncode == 0
        wait_for(lambda: (spool / "failed" / f"{key}.json").is_file(), 120, "the image to be refused")
        reason = json.loads((spool / "failed" / f"{key}.json").read_text())["reason"]
        assert "Unable to allocate" in reason or "MemoryError" in reason, reason
        assert _store(node.port, _radiograph(phantoms, tmp_path / "send", "normal.dcm")).returncode == 0
        wait_for(lambda: len(receiver.files()) == 2, 60, "the next image's results")
        assert node.process.poll() is None
    finally:
        node.stop()


def _in_process_node(tmp_path: Path, **options: object):  # noqa: ANN202 - a PacsNode, receiving only
    from svdh_runtime.pacs.node import NodeOptions, PacsNode

    messages: list[str] = []
    node = PacsNode(NodeOptions(spool=tmp_path / "spool", port=free_port(), outbox=tmp_path / "outbox", **options),
                    log=messages.append)  # fmt: skip
    node.start(receive=True, work=False)
    return node, messages


def test_a_dataset_is_written_to_disk_as_it_arrives_not_held_in_memory(phantoms: Path, tmp_path: Path) -> None:
    large = _radiograph(phantoms, tmp_path / "send", "large.dcm", upscale=4)  # 43 MB on the wire
    node, _ = _in_process_node(tmp_path)
    try:
        tracemalloc.start()
        done = _store(node.options.port, large)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert done.returncode == 0, done.stderr
        queued = list((tmp_path / "spool" / "incoming").glob("*.dcm"))
        assert len(queued) == 1  # the very dataset sent (the file meta is the receiver's own)
        assert pydicom.dcmread(queued[0]).PixelData == pydicom.dcmread(large).PixelData
        assert peak < 8 << 20, f"{peak >> 20} MiB allocated while receiving {large.stat().st_size >> 20} MiB"
        assert list((tmp_path / "spool" / "receiving").iterdir()) == []
    finally:
        node.stop()


def test_a_dataset_larger_than_the_limit_is_aborted_as_it_arrives(phantoms: Path, tmp_path: Path) -> None:
    large = _radiograph(phantoms, tmp_path / "send", "large.dcm")  # ~5 MB
    small = _radiograph(phantoms, tmp_path / "send", "small.dcm", Rows=512, Columns=512)
    small_ds = pydicom.dcmread(small)
    small_ds.PixelData = small_ds.PixelData[: 512 * 512 * 2]
    small_ds.save_as(small, enforce_file_format=True)  # 0.5 MB
    node, messages = _in_process_node(tmp_path, max_store_bytes=1 << 20)
    try:
        refused = _store(node.options.port, large)
        assert refused.returncode != 0
        wait_for(lambda: node.stats["aborted_too_large"] == 1, 10, "the abort")
        assert any("its dataset passed 1 MiB (--max-store-mib) (A-ABORT)" in m for m in messages), messages
        assert _store(node.options.port, small).returncode == 0, "the next sender is served"
        spool = tmp_path / "spool"
        assert [p.name for p in (spool / "incoming").glob("*.dcm")] == [f"{small_ds.SOPInstanceUID}.dcm"]
        wait_for(lambda: list((spool / "receiving").iterdir()) == [], 10, "the half-received dataset to go")
    finally:
        node.stop()


def test_a_store_the_disk_cannot_take_is_aborted_and_status_stays_truthful(
    phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from svdh_runtime.pacs.spool import MIN_FREE_BYTES

    large = _radiograph(phantoms, tmp_path / "send", "large.dcm")  # ~5 MB
    room = {"free": MIN_FREE_BYTES + (3 << 20)}  # 3 MiB above the floor: less than the dataset
    real = shutil.disk_usage

    def disk_usage(path: object) -> object:  # the spool's disk fills as the dataset is written to it
        usage = real(path)
        written = sum(p.stat().st_size for p in (tmp_path / "spool" / "receiving").iterdir())
        return type(usage)(usage.total, usage.used, room["free"] - written)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    node, messages = _in_process_node(tmp_path)
    try:
        assert _store(node.options.port, large).returncode != 0
        wait_for(lambda: node.stats["aborted_too_large"] == 1, 10, "the abort")
        assert any("the spool disk is nearly full (A-ABORT)" in m for m in messages), messages
        wait_for(lambda: list((tmp_path / "spool" / "receiving").iterdir()) == [], 10, "the partial dataset to go")
        assert node.status()["refusing_new_images"] is None, "the half-received dataset was removed: room again"
        room["free"] = MIN_FREE_BYTES // 2
        assert node.status()["refusing_new_images"] == "spool disk nearly full"
    finally:
        node.stop()


def test_an_invalid_uid_holding_a_name_never_reaches_the_node_log(
    phantoms: Path, receiver: Receiver, tmp_path: Path
) -> None:
    named = _radiograph(phantoms, tmp_path / "send", "named.dcm")
    ds = pydicom.dcmread(named)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "Secretname.8472615"
    ds.save_as(named, enforce_file_format=True)
    node = Node(tmp_path / "spool", receiver, None, "--log-level", "debug")
    try:
        done = _store(node.port, named)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: len(receiver.files()) == 2 or "refused" in node.log.read_text(), 60, "the image's outcome")
        time.sleep(0.5)
    finally:
        node.stop()
    log = node.log.read_text()
    assert "Secretname" not in log and "C-STORE x" in log, log[-2000:]


def test_eight_senders_of_the_same_images_are_all_acknowledged_and_each_image_queued_once(
    phantoms: Path, tmp_path: Path
) -> None:
    images = tmp_path / "send"
    images.mkdir()
    for source in sorted((phantoms / "images").glob("*.dcm"))[:12]:
        shutil.copy(source, images / source.name)
    node, messages = _in_process_node(tmp_path)
    try:
        command = [STORESCU, "-aec", "SVDH", "+sd", "127.0.0.1", str(node.options.port), str(images)]
        senders = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
        outcomes = [(sender.wait(timeout=180), sender.stderr.read().decode()) for sender in senders]
        assert all(code == 0 for code, _ in outcomes), [text for code, text in outcomes if code]
        queued = sorted(p.stem for p in (tmp_path / "spool" / "incoming").glob("*.dcm"))
        expected = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in images.iterdir())
        assert queued == expected and node.stats["received"] == 12 and node.stats["duplicates"] == 7 * 12
        assert not list((tmp_path / "spool").rglob("*.partial")) and node.stats["refused_busy"] == 0
    finally:
        node.stop()
