"""Longitudinal phantoms: the same people at several visits, damage that only grows, test-retest pairs."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from svdh_runtime.areas import grade_columns
from svdh_trainer.cli import app
from svdh_trainer.datasets import read_dataset
from svdh_trainer.phantom.anatomy import build_hand
from svdh_trainer.phantom.generate import generate
from svdh_trainer.phantom.grades import draw_disease
from svdh_trainer.phantom.longitudinal import Schedule
from svdh_trainer.phantom.progression import RAPID_PER_YEAR, draw_rate, trajectory
from svdh_trainer.phantom.streams import Streams

SCHEDULE = Schedule(visits=3, interval_years=1.0, retest=True)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((folder / "images").iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    for name in ("labels.csv", "truth.csv", "readers.csv", "joints.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("longitudinal")
    generate(folder, 6, 31, layout="mixed", workers=1, schedule=SCHEDULE)
    return folder


def test_the_same_seed_gives_the_same_files_however_many_workers(cohort: Path, tmp_path: Path) -> None:
    generate(tmp_path, 6, 31, layout="mixed", workers=2, schedule=SCHEDULE)
    assert _digest(tmp_path) == _digest(cohort)


def test_damage_never_decreases_and_retests_share_grades(cohort: Path) -> None:
    truth = _rows(cohort / "truth.csv")
    assert len(truth) == 6 * 3 * 2
    by_patient: dict[str, dict[tuple[int, int], dict[str, str]]] = {}
    for row in truth:
        by_patient.setdefault(row["Patient_ID"], {})[(int(row["Visit"]), int(row["Retest"]))] = row
    grew = 0
    for sittings in by_patient.values():
        assert sorted(sittings) == [(v, r) for v in (1, 2, 3) for r in (0, 1)]
        for visit in (1, 2, 3):
            first, retest = sittings[(visit, 0)], sittings[(visit, 1)]
            assert {c: first[c] for c in grade_columns()} == {c: retest[c] for c in grade_columns()}
        for visit in (2, 3):
            before, after = sittings[(visit - 1, 0)], sittings[(visit, 0)]
            for column in grade_columns():
                assert int(after[column]) >= int(before[column]), column
            grew += int(after["Overall_Tol"]) > int(before["Overall_Tol"])
    assert grew > 0  # somebody progressed


def test_files_share_the_patient_id_and_dates_advance(cohort: Path) -> None:
    labels = _rows(cohort / "labels.csv")
    samples = read_dataset(cohort)
    assert {s.path.name.split("-V")[0] for s in samples} == {r["Patient_ID"] for r in labels}
    dates: dict[str, dict[int, dt.date]] = {}
    studies: dict[tuple, set[str]] = {}
    for sample in samples:
        ds = pydicom.dcmread(sample.path, stop_before_pixels=True)
        assert ds.PatientID == sample.patient_id
        assert sample.path.stem.startswith(f"{sample.patient_id}-V{sample.sitting.visit}")
        assert ("-R1" in sample.path.stem) == (sample.sitting.retest == 1)
        date = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
        assert ds.AcquisitionDate == ds.StudyDate
        dates.setdefault(sample.patient_id, {})[sample.sitting.visit] = date
        studies.setdefault((sample.patient_id, sample.sitting.visit, sample.sitting.retest), set()).add(
            ds.StudyInstanceUID
        )
    for sample in samples:
        baseline, date = dates[sample.patient_id][1], dates[sample.patient_id][sample.sitting.visit]
        assert sample.sitting.years == pytest.approx((date - baseline).days / 365.25, abs=1e-3)
    for per_visit in dates.values():
        assert per_visit[1] < per_visit[2] < per_visit[3]
        assert 0.8 < (per_visit[2] - per_visit[1]).days / 365.25 < 1.2
    assert all(len(uids) == 1 for uids in studies.values())  # both hands of a sitting: one study
    assert len({uid for uids in studies.values() for uid in uids}) == len(studies)


def test_an_unchanged_joint_looks_the_same_and_a_grown_one_keeps_its_bites() -> None:
    erosion = {"mcp2": 2, "pip3": 1, "radius": 1, "lunate": 1}
    narrowing = {"mcp2": 1}
    streams = Streams.keyed(4, 2, 0)
    unused = np.random.default_rng(0)
    before = build_hand(erosion, narrowing, unused, streams=streams)
    again = build_hand(erosion, narrowing, unused, streams=streams)
    after = build_hand({**erosion, "pip3": 3}, narrowing, unused, streams=streams)
    centres = lambda hand: [tuple(np.round(b.centre, 6)) for b in hand.bites]  # noqa: E731
    assert centres(before) == centres(again)
    assert len(after.bites) > len(before.bites)
    kept = set(centres(after))
    away_from_pip3 = [c for c in centres(before) if np.linalg.norm(np.array(c) - before.sites["pip3"].centre) > 15.0]
    assert away_from_pip3 and all(c in kept for c in away_from_pip3)
    assert [tuple(np.round(b.start, 6)) for b in after.bones[:2]] == [
        tuple(np.round(b.start, 6)) for b in before.bones[:2]
    ]


def test_rates_follow_the_targeted_cohort_and_trajectories_reach_them() -> None:
    rng = np.random.default_rng(5)
    severities = rng.beta(0.7, 3.0, 20_000)
    rates = np.array([draw_rate(rng, s) for s in severities])
    assert 0.10 < (rates >= RAPID_PER_YEAR).mean() < 0.22
    assert np.median(rates) < 1.5
    assert (rates < 1.0).mean() > 0.4
    for seed in range(40):
        disease = draw_disease(np.random.default_rng([seed, 9]))
        rate = draw_rate(np.random.default_rng([seed, 8]), disease.severity)
        years = [0.0, 1.0, 2.1]
        totals = [g.totals()[0] for g in trajectory(disease, rate, years)]
        assert totals == sorted(totals)
        for t, total in zip(years, totals):
            assert total >= min(280, totals[0] + rate * t) - 1e-9


def test_longitudinal_needs_the_realistic_phantoms(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "x"), "--n", "2", "--visits", "2", "--realism", "1"])
    assert result.exit_code == 2
    assert "--realism 2" in result.output
