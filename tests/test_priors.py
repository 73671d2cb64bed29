"""The PACS node's prior index: pseudonymised, the latest earlier result of the same hands, bounded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from svdh_runtime.pacs.priors import MAX_PRIORS, Prior, PriorIndex


def _prior(uid: str, date: str, hands: tuple[str, ...] = ("LH", "RH"), time: str = "") -> Prior:
    return Prior(uid, "1.2.840.10008.5.1.4.1.1.1.1", f"study-{uid}", f"series-{uid}", date, time, hands, 10.0)


def test_the_latest_earlier_result_of_the_same_hands_is_the_prior(tmp_path: Path) -> None:
    index = PriorIndex(tmp_path / "priors")
    index.add("PAT-1", _prior("a", "2020-01-01"), np.zeros((4, 5), np.float32))
    index.add("PAT-1", _prior("b", "2021-01-01"), None)
    index.add("PAT-1", _prior("c", "2021-06-01", ("LH",)), None)
    index.add("PAT-1", _prior("d", "2023-01-01"), None)
    when = (dt.date(2022, 1, 1), "")
    assert index.latest_before("PAT-1", when, ("LH", "RH"), "x").sop_instance_uid == "b"
    assert index.latest_before("PAT-1", when, ("LH",), "x").sop_instance_uid == "c"
    assert index.latest_before("PAT-1", (dt.date(2020, 1, 1), ""), ("LH", "RH"), "x") is None
    assert index.latest_before("PAT-2", when, ("LH", "RH"), "x") is None
    assert index.latest_before("PAT-1", (dt.date(2021, 1, 1), "120000"), ("LH", "RH"), "b").sop_instance_uid == "a"
    assert index.canvas(index.entries("PAT-1")[0]).shape == (4, 5)
    names = " ".join(p.name + (p.read_text() if p.suffix == ".json" else "") for p in (tmp_path / "priors").iterdir())
    assert "PAT-1" not in names


def test_the_index_keeps_the_latest_results_and_survives_damage(tmp_path: Path) -> None:
    index = PriorIndex(tmp_path / "priors")
    for year in range(2000, 2000 + MAX_PRIORS + 5):
        index.add("P", _prior(f"u{year}", f"{year}-01-01"), np.ones((2, 2), np.float32))
    entries = index.entries("P")
    assert len(entries) == MAX_PRIORS and entries[0].date == "2005-01-01"
    assert len(list((tmp_path / "priors").glob("*.npy"))) == MAX_PRIORS  # the dropped canvases went too
    next((tmp_path / "priors").glob("*.json")).write_text("{not json")
    assert index.entries("P") == []  # a damaged index costs the change, never the score
    again = PriorIndex(tmp_path / "priors")  # the same key: the same file names
    again.add("P", _prior("new", "2030-01-01"), None)
    assert [p.sop_instance_uid for p in again.entries("P")] == ["new"]
