"""The PACS node scores the images waiting in its queue together (prepared on every core, one model call),
with the answers and pictures of scoring them one at a time; a batch that fails is scored one by one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import run_cli
from pacs_peers import wait_for

pytest.importorskip("pynetdicom")


def _queue(spool_root: Path, files: list[Path]) -> list[str]:
    from svdh_runtime.pacs.spool import Spool, item_key

    spool = Spool(spool_root)
    keys = []
    for file in files:
        key = item_key(str(pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID))
        assert spool.put_file(key, file)
        keys.append(key)
    return keys


def _run_node(spool_root: Path, outbox: Path, batch_size: int, expected: int, fail_batches: bool = False):  # noqa: ANN202
    from svdh_runtime.pacs.node import NodeOptions, PacsNode
    from svdh_runtime.pacs.spool import Spool

    messages: list[str] = []
    node = PacsNode(NodeOptions(spool=spool_root, outbox=outbox, batch_size=batch_size), log=messages.append)
    calls: list[int] = []
    infer_batch = node.scorer.infer_batch

    def counted(results):  # noqa: ANN001, ANN202
        ready = sum(r.prepared is not None for r in results)
        calls.append(ready)
        if fail_batches and ready > 1:
            raise RuntimeError("a batch that cannot be scored")
        return infer_batch(results)

    node.scorer.infer_batch = counted
    node.start(receive=False, work=True)
    try:
        spool = Spool(spool_root)
        wait_for(lambda: spool.counts().done + spool.counts().failed >= expected, 180, "the queue to empty")
    finally:
        node.stop()
    return calls, messages


def _scores(spool_root: Path, keys: list[str]) -> dict[str, float]:
    from svdh_runtime.pacs.spool import Spool

    spool = Spool(spool_root)
    return {key: json.loads((spool.results_dir(key) / "result.json").read_text())["score"] for key in keys}


def test_waiting_images_are_scored_together_like_one_at_a_time(phantoms: Path, tmp_path: Path) -> None:
    films = sorted((phantoms / "images").glob("*.dcm"))[:5]
    broken = tmp_path / "broken.dcm"
    ds = pydicom.dcmread(films[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated pixel data: refused on reading
    ds.save_as(broken, enforce_file_format=True)
    together, alone = tmp_path / "together", tmp_path / "alone"
    keys = _queue(together / "spool", [*films, broken])
    _queue(alone / "spool", films[:2])

    calls, messages = _run_node(together / "spool", together / "outbox", 8, expected=6)
    assert max(calls) == 5, f"the five readable images in one model call: {calls}"
    scores = _scores(together / "spool", keys[:5])
    assert (together / "spool" / "failed").exists() and any("refused" in m for m in messages)
    cold = run_cli("svdh-run", *map(str, films), "--json")
    for key, record in zip(keys, (json.loads(line) for line in cold.stdout.splitlines())):
        assert abs(scores[key] - record["score"]) <= 1e-3

    calls_alone, _ = _run_node(alone / "spool", alone / "outbox", 1, expected=2)
    assert calls_alone == [1, 1]
    for key in keys[:2]:  # the same Secondary Capture picture, made from levels prepared ahead or not
        pictures = [pydicom.dcmread(root / "outbox" / f"{key}.sc.dcm").pixel_array for root in (together, alone)]
        difference = np.abs(pictures[0].astype(int) - pictures[1].astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-4  # a batch's CAM differs by float noise


def test_a_batch_that_fails_is_scored_one_by_one(phantoms: Path, tmp_path: Path) -> None:
    films = sorted((phantoms / "images").glob("*.dcm"))[:3]
    keys = _queue(tmp_path / "spool", films)
    calls, messages = _run_node(tmp_path / "spool", tmp_path / "outbox", 8, expected=3, fail_batches=True)
    assert calls == [3, 1, 1, 1] and any("one at a time" in m for m in messages)
    assert len(_scores(tmp_path / "spool", keys)) == 3
    assert not any((tmp_path / "spool" / "results" / key / "attempts").exists() for key in keys)
    shutil.rmtree(tmp_path / "outbox")
