"""Progression between visits: grouping and ordering films, changes and their flags, `svdh-run progression`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from svdh_runtime.bundle import default_bundle_path
from svdh_runtime.change import Change, change_interval, measure_change
from svdh_runtime.errors import BundleError
from svdh_runtime.manifest import MANIFEST_NAME, ChangeCalibration, Manifest
from svdh_runtime.naming import path_label
from svdh_runtime.progression import pseudonym
from svdh_runtime.visits import Film, group_visits, read_film, visit_pairs
from svdh_trainer.change_metrics import SittingScore, change_metrics, fit_change, smallest_detectable_change
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.longitudinal import Schedule

CALIBRATION = ChangeCalibration(
    route="difference", sdc=4.0, sdc_pairs=50, base=2.0, per_point=0.05, scores=tuple(np.linspace(0.1, 2.0, 40))
)


def _film(name: str, patient: str | None, date: str | None, study: str | None = None, side: str | None = None,
          time: str = "") -> Film:  # fmt: skip
    when = dt.date.fromisoformat(date) if date else None
    return Film(Path(name), patient, study or f"{patient}/{date}", when, time, side)


# -- grouping and ordering ----------------------------------------------------------------------------------------
def test_films_group_by_patient_and_order_by_date_whatever_the_input_order() -> None:
    films = [
        _film("b3.dcm", "B", "2022-03-01"),
        _film("a2.dcm", "A", "2021-06-01"),
        _film("b1.dcm", "B", "2020-01-10"),
        _film("a1-left.dcm", "A", "2020-06-01", "A/1", "L"),
        _film("a1-right.dcm", "A", "2020-06-01", "A/1", "R"),
        _film("b2.dcm", "B", "2021-01-10"),
    ]
    groups, orphans = group_visits(films)
    assert not orphans
    by_id = {g.patient_id: g for g in groups}
    assert [s.paths for s in by_id["A"].sittings] == [[Path("a1-left.dcm"), Path("a1-right.dcm")], [Path("a2.dcm")]]
    assert [s.paths[0].name for s in by_id["B"].sittings] == ["b1.dcm", "b2.dcm", "b3.dcm"]
    assert [(a.paths[0].name, b.paths[0].name, kind) for a, b, kind in visit_pairs(by_id["B"])] == [
        ("b1.dcm", "b2.dcm", "consecutive"),
        ("b2.dcm", "b3.dcm", "consecutive"),
        ("b1.dcm", "b3.dcm", "baseline_to_last"),
    ]
    assert visit_pairs(by_id["A"]) == [(by_id["A"].sittings[0], by_id["A"].sittings[1], "consecutive")]


def test_a_missing_date_is_a_clear_error_for_that_patient_only() -> None:
    groups, _ = group_visits([_film("x1.dcm", "X", "2020-01-01"), _film("x2.dcm", "X", None),
                              _film("y1.dcm", "Y", "2020-01-01"), _film("y2.dcm", "Y", "2021-01-01")],
                             label=lambda pid: f"P-{pid}")  # fmt: skip
    by_id = {g.patient_id: g for g in groups}
    assert "x2.dcm has no AcquisitionDate or StudyDate" in by_id["X"].problem
    assert "P-X" in by_id["X"].problem and "'X'" not in by_id["X"].problem
    assert by_id["Y"].problem is None and len(by_id["Y"].sittings) == 2


def test_one_visit_gives_no_pair_and_ambiguous_sittings_are_refused() -> None:
    groups, _ = group_visits([_film("only.dcm", "O", "2020-01-01")])
    assert groups[0].problem is None and visit_pairs(groups[0]) == []
    same_moment = [_film("s1.dcm", "S", "2020-01-01", "S/1", time="101500"),
                   _film("s2.dcm", "S", "2020-01-01", "S/2", time="101500")]  # fmt: skip
    assert "cannot tell which came first" in group_visits(same_moment)[0][0].problem
    later_that_day = [_film("s1.dcm", "S", "2020-01-01", "S/1", time="101500"),
                      _film("s2.dcm", "S", "2020-01-01", "S/2", time="113000")]  # fmt: skip
    assert len(group_visits(later_that_day)[0][0].sittings) == 2
    twice = [_film("l1.dcm", "T", "2020-01-01", "T/1", "L"), _film("l2.dcm", "T", "2020-01-01", "T/1", "L")]
    assert "shows a hand twice" in group_visits(twice)[0][0].problem


def test_films_without_a_patient_need_an_explicit_pair() -> None:
    _, orphans = group_visits([_film("photo.png", None, None)])
    assert orphans and "--baseline" in orphans[0][1]


# -- changes ------------------------------------------------------------------------------------------------------
def test_a_change_is_a_progression_only_above_the_sdc() -> None:
    assert measure_change(CALIBRATION, 4.5, 12.25, 1.0, None).progressor is True
    assert measure_change(CALIBRATION, 3.5, 11.75, 1.0, None).progressor is False
    assert measure_change(CALIBRATION, -4.5, 12.25, 1.0, None).progressor is False  # a fall is no progression
    assert measure_change(None, 20.0, 20.0, 1.0, None).progressor is None  # no calibration: no flag
    assert Change(3.0, 0.01, None, None).per_year is None  # a same-day retest has no yearly rate
    assert Change(3.0, 2.0, None, None).per_year == 1.5
    got = change_interval(CALIBRATION, 5.0, 40.0, 0.9)
    half = CALIBRATION.quantile(0.9) * (2.0 + 0.05 * 40.0)
    assert (got.low, got.high) == pytest.approx((5.0 - half, 5.0 + half))


def test_the_change_calibration_is_checked_when_a_manifest_is_read() -> None:
    manifest = Manifest.read(default_bundle_path() / MANIFEST_NAME)
    with_change = dataclasses.replace(manifest, outputs=dataclasses.replace(manifest.outputs, changes=(CALIBRATION,)))
    assert Manifest.from_dict(json.loads(with_change.to_json())).outputs.change_for("difference") == CALIBRATION
    for bad in ({"route": "guess"}, {"sdc": 0.0}, {"scores": [2.0, 1.0] * 10}, {"base": -1.0}):
        data = json.loads(with_change.to_json())
        data["outputs"]["changes"][0].update(bad)
        with pytest.raises(BundleError, match="invalid manifest: change"):
            Manifest.from_dict(data)


# -- SDC and calibration on changes with known noise --------------------------------------------------------------
def _sittings(patients: int, noise: float, seed: int) -> list[SittingScore]:
    """Every patient at 3 visits filmed twice; each film's score is the truth plus N(0, noise)."""
    rng = np.random.default_rng(seed)
    sittings = []
    for p in range(patients):
        truth = rng.gamma(1.0, 20.0)
        for visit in (1, 2, 3):
            truth += rng.exponential(2.0) * (visit > 1)
            for retest in (0, 1):
                model = truth + rng.normal(0.0, noise)
                sittings.append(SittingScore(f"p{p}", visit, retest, visit - 1.0, model, truth, truth))
    return sittings


def test_the_sdc_follows_bruynesteijns_formula_on_known_noise() -> None:
    sittings = _sittings(400, 1.5, 0)
    metrics = change_metrics(sittings, bootstrap=0)
    # d = (e_b0 - e_a0) - (e_b1 - e_a1) has SD 2 * noise, so SDC = 1.96 * 2 * noise / sqrt(2)
    assert metrics["sdc"] == pytest.approx(1.96 * 2 * 1.5 / np.sqrt(2), rel=0.08)
    assert metrics["rmse"] == pytest.approx(1.5 * np.sqrt(2), rel=0.08)
    assert 0.0 <= metrics["false_progression"] <= 0.06  # two films of one visit rarely differ by the SDC
    assert smallest_detectable_change(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0


def test_the_change_calibration_covers_at_its_level_on_new_patients() -> None:
    calibration = fit_change(_sittings(300, 2.0, 1), seed=0, level=0.9)
    metrics = change_metrics(_sittings(600, 2.0, 2), calibration, bootstrap=0)
    assert abs(metrics["interval"]["coverage"] - 0.9) <= 0.03
    assert metrics["progression_threshold"] == pytest.approx(calibration.progression_threshold, abs=1e-3)
    assert abs(calibration.zero_level) < 0.3  # film noise is symmetric: no change lies near 0
    assert calibration.sdc == pytest.approx(1.96 * 2 * 2.0 / np.sqrt(2), rel=0.1)


# -- the command --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("visits")
    generate(folder, 3, 41, layout="mixed", workers=1, schedule=Schedule(3, 1.0, retest=True))
    return folder


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle with a change calibration written into its manifest."""
    out = tmp_path_factory.mktemp("calibrated") / "bundle"
    shutil.copytree(default_bundle_path(), out)
    manifest = Manifest.read(out / MANIFEST_NAME)
    dataclasses.replace(manifest, outputs=dataclasses.replace(manifest.outputs, changes=(CALIBRATION,))).write(
        out / MANIFEST_NAME
    )
    return out


def test_progression_pairs_each_patients_visits_and_pseudonymises(
    visits: Path, calibrated: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in (visits / "images").glob("*.dcm"):
        if "-R1" not in path.name and not (path.name.startswith("S41-00002") and "-V1" not in path.name):
            shutil.copy(path, folder / path.name)  # patient 2 keeps its baseline only
    done = run_cli("svdh-run", "progression", str(folder), "--json", "--model", str(calibrated), "--order", "blinded",
                   "--pseudonym-key", str(tmp_path / "key"), "--out", str(tmp_path / "out"), "--no-paths")  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 3
    key = (tmp_path / "key").read_bytes()
    assert {r["patient"] for r in records} == {pseudonym(f"S41-0000{i}", key) for i in range(3)}
    assert "S41-0000" not in done.stdout + done.stderr + (tmp_path / "out" / "cohort.csv").read_text()
    by_patient = {r["patient"]: r for r in records}
    lone = by_patient[pseudonym("S41-00002", key)]
    assert lone["pairs"] == [] and "one visit" in lone["note"]
    full = by_patient[pseudonym("S41-00000", key)]
    assert [p["kind"] for p in full["pairs"]] == ["consecutive", "consecutive", "baseline_to_last"]
    first = full["pairs"][0]
    names = {path_label(path): path.name for path in folder.iterdir()}
    assert all("-V1" in names[s] for s in first["baseline"]["sources"])
    assert all("-V2" in names[s] for s in first["followup"]["sources"])
    change = first["change"]
    assert change["total"] == pytest.approx(first["followup"]["score"] - first["baseline"]["score"], abs=2e-3)
    assert change["low"] < change["total"] < change["high"]
    assert change["progressor"] == (change["total"] > CALIBRATION.sdc)
    assert change["per_year"] == pytest.approx(change["total"] / change["years"], abs=0.01)
    assert 0.8 < change["years"] < 1.2 and len(first["per_area"]) == 62
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"progression.jsonl", "cohort.csv", "progression.html"}
    assert "<svg" in (tmp_path / "out" / "progression.html").read_text()


def test_an_explicit_pair_scores_exactly_those_films(visits: Path, calibrated: Path, tmp_path: Path) -> None:
    images = visits / "images"
    stem = next(p.name.split("-V1")[0] for p in images.glob("*-V1.dcm"))  # a patient filmed on one film
    done = run_cli("svdh-run", "progression", "--baseline", str(images / f"{stem}-V1.dcm"), "--followup",
                   str(images / f"{stem}-V1-R1.dcm"), "--json", "--include-phi", "--model", str(calibrated))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["patient"] == stem  # --include-phi
    (pair,) = record["pairs"]
    assert pair["kind"] == "explicit" and pair["change"]["years"] == 0.0 and pair["change"]["per_year"] is None
    assert pair["route"] == "paired"  # the shipped bundle reads the two films side by side
    other = next(p for p in images.glob("*-V2*.dcm") if not p.name.startswith(stem))
    refused = run_cli("svdh-run", "progression", "--baseline", str(images / f"{stem}-V1.dcm"), "--followup",
                      str(other), "--model", str(calibrated))  # fmt: skip
    assert refused.returncode == 2 and "different patients" in refused.stderr


def test_pictures_need_an_explicit_pair(visits: Path, calibrated: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (320, 400), 30).save(folder / "photo.png")
    for path in (visits / "images").glob("S41-00000-V[12]*"):
        if "-R1" not in path.name:
            shutil.copy(path, folder / path.name)
    done = run_cli("svdh-run", "progression", str(folder), "--json", "--model", str(calibrated), "--order", "blinded",
                   "--pseudonym-key", str(tmp_path / "key"))  # fmt: skip
    assert done.returncode == 2
    assert "photo.png: no PatientID" in done.stderr and "Traceback" not in done.stderr
    assert len([json.loads(line) for line in done.stdout.splitlines()][0]["pairs"]) == 1
    usage = run_cli("svdh-run", "progression", "--baseline", str(folder / "photo.png"))
    assert usage.returncode == 2 and "--followup" in usage.stderr


def test_read_film_takes_the_header_facts(visits: Path) -> None:
    path = next((visits / "images").glob("*-V2.dcm"))
    film = read_film(path)
    assert film.patient_id == path.name.split("-V2")[0] and film.laterality == "B"
    assert film.date is not None and film.study
    assert read_film(Path(__file__)).patient_id is None  # not DICOM: nothing known
