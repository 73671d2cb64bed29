"""Change between visits on a longitudinal data set: what trials measure, for the model and the readers.

A longitudinal folder (``svdh-train phantom --visits K --retest``) films every
patient at several visits, and with ``--retest`` twice at each. From a
:class:`~svdh_trainer.scored_set.ScoredSet` of it this module gives:

- each sitting's total (the sum over its images: one film of both hands, or
  one per hand) for the model, the readers' mean, each reader and the exact
  grades;
- the changes between consecutive visits and from baseline to the last visit,
  and their PCC and RMSE against the true change;
- the smallest detectable change (SDC) as Bruynesteijn et al. define it
  (Ann Rheum Dis 2005;64:179-82): ``SDC = 1.96 * SD(d) / (sqrt(2) * sqrt(k))``,
  ``d`` the differences between two independent measurements of the same
  change and ``k`` the number of readers averaged. For the model the two
  measurements are the change on the first films and on the retest films of
  the same two visits (``k = 1``); for the readers, reader A's and reader B's
  change on the same films (``k = 1`` for one reader, 2 for their mean);
- the AUC for telling progressors (a true change of at least ``threshold``)
  from the others, and the false-progression rate: pairs of films of one
  visit (the true change is 0) whose measured change exceeds the SDC.

Only the difference route (the follow-up's score minus the baseline's) is
measured here; bootstrap CIs resample patients.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from svdh_runtime.manifest import DEFAULT_INTERVAL_LEVEL, ChangeCalibration

from .agreement import READERS_NAME, TRUTH_NAME, grades_by_patient, sitting_key
from .datasets import DatasetError, Sample
from .intervals import first_half, non_negative_least_squares
from .metrics import pearson, rmse, roc_auc
from .scored_set import ScoredSet

PROGRESSOR_THRESHOLD = 3.0  # a true change this large makes a progressor: the human readers' SDC (PMID 23606704)
MIN_CHANGE_PAIRS = 40  # 20 in each half of a calibration
Z95 = 1.959964


@dataclass(frozen=True)
class SittingScore:
    """The totals of one sitting (a visit's films, or their retest) of one patient."""

    patient: str
    visit: int
    retest: int
    years: float
    model: float
    readers_mean: float
    exact: float  # NaN without truth.csv
    readers: dict[str, float] = field(default_factory=dict)  # each reader's total (readers.csv)
    films: tuple[str, ...] = ()  # the sitting's image paths


@dataclass(frozen=True)
class ChangePair:
    """Two sittings of one patient, earlier first."""

    first: SittingScore
    second: SittingScore
    measured: float | None = None  # the paired route's change; None: the difference of the two scores

    @property
    def patient(self) -> str:
        return self.first.patient

    @property
    def model(self) -> float:
        return self.second.model - self.first.model if self.measured is None else self.measured

    @property
    def exact(self) -> float:
        return self.second.exact - self.first.exact

    @property
    def readers_mean(self) -> float:
        return self.second.readers_mean - self.first.readers_mean

    @property
    def truth(self) -> float:
        """The exact change where the set has it, else the readers' mean change."""
        return self.exact if math.isfinite(self.exact) else self.readers_mean

    @property
    def mean_score(self) -> float:
        return (self.first.model + self.second.model) / 2

    def reader(self, name: str) -> float:
        return self.second.readers[name] - self.first.readers[name]


def sitting_scores(scored: ScoredSet, samples: list[Sample], data: Path) -> list[SittingScore]:
    """The sittings whose every image was scored, with their totals."""
    expected = Counter(sitting_key(s.patient_id, s.sitting) for s in samples if s.sitting is not None)
    if not expected:
        raise DatasetError(f"{data}: not a longitudinal data set (labels.csv has no Visit column)")
    grouped: dict[str, list] = defaultdict(list)
    for sample, result in scored.scored:
        grouped[sitting_key(sample.patient_id, sample.sitting)].append((sample, result))
    exact = _table(data / TRUTH_NAME) if (data / TRUTH_NAME).is_file() else {}
    readers = _table(data / READERS_NAME, key="Reader") if (data / READERS_NAME).is_file() else {}
    sittings = []
    for key, members in grouped.items():
        if len(members) != expected[key]:
            continue  # a film of the sitting failed or was turned away: its total would be a part
        sample = members[0][0]
        sitting = sample.sitting
        sittings.append(
            SittingScore(
                patient=sample.patient_id,
                visit=sitting.visit,
                retest=sitting.retest,
                years=sitting.years,
                model=float(sum(r.prediction.score for _, r in members)),
                readers_mean=float(sum(s.score for s, _ in members)),
                exact=exact.get(key, float("nan")),
                readers={name.split("\t")[1]: total for name, total in readers.items() if name.split("\t")[0] == key},
                films=tuple(str(s.path) for s, _ in members),
            )
        )
    return sorted(sittings, key=lambda s: (s.patient, s.visit, s.retest))


def _table(path: Path, key: str | None = None) -> dict[str, float]:
    return {name: float(sum(grades.values())) for name, grades in grades_by_patient(path, key).items()}


def _by_patient(sittings: list[SittingScore]) -> dict[str, dict[tuple[int, int], SittingScore]]:
    patients: dict[str, dict[tuple[int, int], SittingScore]] = defaultdict(dict)
    for s in sittings:
        patients[s.patient][(s.visit, s.retest)] = s
    return patients


def visit_pairs(sittings: list[SittingScore], retest: int = 0) -> list[ChangePair]:
    """Consecutive visits of each patient, and baseline to the last visit when there are more than two (the
    films of acquisition ``retest`` of each visit)."""
    pairs = []
    for visits in _by_patient(sittings).values():
        order = sorted(v for v, r in visits if r == retest)
        steps = list(zip(order, order[1:])) + ([(order[0], order[-1])] if len(order) > 2 else [])
        pairs += [ChangePair(visits[(a, retest)], visits[(b, retest)]) for a, b in steps]
    return pairs


def retest_pairs(sittings: list[SittingScore]) -> list[tuple[ChangePair, ChangePair]]:
    """The same two visits measured twice: (the first films' change, the retest films' change)."""
    retests = {(p.patient, p.first.visit, p.second.visit): p for p in visit_pairs(sittings, retest=1)}
    return [
        (pair, retests[key])
        for pair in visit_pairs(sittings)
        if (key := (pair.patient, pair.first.visit, pair.second.visit)) in retests
    ]


def same_visit_pairs(sittings: list[SittingScore]) -> list[ChangePair]:
    """Each visit's first films against its retest films: a true change of 0."""
    return [
        ChangePair(visits[(v, 0)], visits[(v, r)])
        for visits in _by_patient(sittings).values()
        for v, r in sorted(visits)
        if r > 0 and (v, 0) in visits
    ]


def smallest_detectable_change(first: np.ndarray, second: np.ndarray, readers_averaged: int = 1) -> float:
    """Bruynesteijn's SDC from two measurements of the same changes."""
    d = np.asarray(first, float) - np.asarray(second, float)
    if len(d) < 2:
        return float("nan")
    return float(Z95 * d.std(ddof=1) / math.sqrt(2) / math.sqrt(readers_averaged))


Measure = Callable[["SittingScore", "SittingScore"], "float | None"]


def routed(pairs: list[ChangePair], measure: Measure | None) -> list[ChangePair]:
    """The pairs with the paired route's change (dropping those it cannot measure); as they are without."""
    if measure is None:
        return pairs
    return [replace(p, measured=m) for p in pairs if (m := measure(p.first, p.second)) is not None]


def _routed_retests(retests: list[tuple[ChangePair, ChangePair]], measure: Measure | None) -> list:
    if measure is None:
        return retests
    both = [(routed([a], measure), routed([b], measure)) for a, b in retests]
    return [(a[0], b[0]) for a, b in both if a and b]


def change_metrics(
    sittings: list[SittingScore],
    calibration: ChangeCalibration | None = None,
    threshold: float = PROGRESSOR_THRESHOLD,
    bootstrap: int = 1000,
    seed: int = 0,
    measure: Measure | None = None,
) -> dict:
    """The change figures on a longitudinal set: the difference route, or with ``measure`` (the paired
    graph's change of two sittings) the paired route. ``calibration``: the bundle's, whose SDC sets the
    progressor flags and the false-progression rate (default: the SDC measured here) and whose intervals'
    coverage is measured."""
    pairs = routed(visit_pairs(sittings), measure)
    retests = _routed_retests(retest_pairs(sittings), measure)
    same = routed(same_visit_pairs(sittings), measure)
    if len(pairs) < 2:
        return {}
    flag_threshold = calibration.progression_threshold if calibration is not None else None
    patients = sorted({p.patient for p in pairs})
    measured_sdc = smallest_detectable_change(*_retest_changes(retests)) if len(retests) >= 2 else float("nan")
    zero_level = float(np.mean([p.model for p in same])) if same else 0.0
    threshold_sdc = flag_threshold if flag_threshold is not None else zero_level + measured_sdc

    pairs_of, retests_of, same_of = defaultdict(list), defaultdict(list), defaultdict(list)
    for p in pairs:
        pairs_of[p.patient].append(p)
    for r in retests:
        retests_of[r[0].patient].append(r)
    for p in same:
        same_of[p.patient].append(p)

    def figures(chosen: list[str]) -> dict[str, float]:
        """The figures over ``chosen`` patients, each counted as often as it appears (a bootstrap draw)."""
        keep = [p for name in chosen for p in pairs_of[name]]
        kept_retests = [r for name in chosen for r in retests_of[name]]
        kept_same = [p for name in chosen for p in same_of[name]]
        model, truth = np.array([p.model for p in keep]), np.array([p.truth for p in keep])
        row = {
            "pcc": pearson(model, truth),
            "rmse": rmse(model, truth),
            "bias": float(np.mean(model - truth)),
            "auc": roc_auc(model, truth >= threshold),
            "sdc": smallest_detectable_change(*_retest_changes(kept_retests)) if len(kept_retests) >= 2 else math.nan,
        }
        if kept_same and math.isfinite(threshold_sdc):
            row["false_progression"] = float(np.mean([p.model > threshold_sdc for p in kept_same]))
        return row

    point = figures(patients)
    result: dict = {
        "route": "difference" if measure is None else "paired",
        "patients": len(patients),
        "visit_pairs": len(pairs),
        "retest_pairs": len(retests),
        "same_visit_pairs": len(same),
        "truth": "exact" if all(math.isfinite(p.exact) for p in pairs) else "readers_mean",
        "progressor_threshold": threshold,
        "progressors": int(sum(p.truth >= threshold for p in pairs)),
        "zero_level": round(zero_level, 4),
        "progression_threshold": None if not math.isfinite(threshold_sdc) else round(threshold_sdc, 3),
        "progression_threshold_from": "bundle" if flag_threshold is not None else "this set",
    }
    cis = _bootstrap(figures, patients, bootstrap, seed) if bootstrap else {}
    for name, value in point.items():
        result[name] = None if not math.isfinite(value) else round(value, 4)
        if name in cis:
            result[f"{name}_ci"] = cis[name]
    flagged = np.array([p.model > threshold_sdc for p in pairs]) if math.isfinite(threshold_sdc) else None
    if flagged is not None:
        true = np.array([p.truth >= threshold for p in pairs])
        result["flag_sensitivity"] = round(float(flagged[true].mean()), 4) if true.any() else None
        result["flag_specificity"] = round(float((~flagged[~true]).mean()), 4) if (~true).any() else None
    if calibration is not None:
        from svdh_runtime.change import change_interval

        inside = [
            (got := change_interval(calibration, p.model, p.mean_score, calibration.level)).low <= p.truth <= got.high
            for p in pairs
        ]
        widths = [2 * calibration.quantile(calibration.level) * calibration.difficulty(p.mean_score) for p in pairs]
        result["interval"] = {"level": calibration.level, "coverage": round(float(np.mean(inside)), 4),
                              "mean_width": round(float(np.mean(widths)), 3)}  # fmt: skip
    result["readers"] = _reader_figures(pairs, threshold)
    years = np.array([p.second.years - p.first.years for p in pairs])
    exact_rate = np.array([p.truth for p in pairs]) / np.maximum(years, 1e-6)
    result["true_change_per_year"] = {
        "median": round(float(np.median(exact_rate)), 3),
        "mean": round(float(np.mean(exact_rate)), 3),
        "share_at_least_5": round(float(np.mean(exact_rate >= 5.0)), 4),
    }
    return result


def _retest_changes(retests: list[tuple[ChangePair, ChangePair]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([a.model for a, _ in retests]), np.array([b.model for _, b in retests])


def _reader_figures(pairs: list[ChangePair], threshold: float) -> dict:
    """How the simulated readers measure the same changes: each reader's and their mean's PCC/RMSE against
    the truth, and the readers' SDC (reader A's change against reader B's on the same films)."""
    names = sorted(set.intersection(*(set(p.first.readers) & set(p.second.readers) for p in pairs)))
    truth = np.array([p.truth for p in pairs])
    mean = np.array([p.readers_mean for p in pairs])
    out: dict = {
        "mean": {"pcc": round(pearson(mean, truth), 4), "rmse": round(rmse(mean, truth), 3),
                 "auc": round(roc_auc(mean, truth >= threshold), 4)},
    }  # fmt: skip
    if len(names) >= 2:
        a, b = (np.array([p.reader(n) for p in pairs]) for n in names[:2])
        out["sdc_one_reader"] = round(smallest_detectable_change(a, b, 1), 3)
        out["sdc_readers_mean"] = round(smallest_detectable_change(a, b, 2), 3)
        out["pair"] = names[:2]
    return out


def _bootstrap(figures: Callable[[list[str]], dict], patients: list[str], draws: int, seed: int) -> dict:
    """95 % percentile intervals of the figures over draws of the patients with replacement."""
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = defaultdict(list)
    for _ in range(draws):
        for name, value in figures(list(rng.choice(patients, len(patients), replace=True))).items():
            values[name].append(value)
    return {
        name: [round(float(v), 4) for v in np.nanpercentile(vals, [2.5, 97.5])]
        for name, vals in values.items()
        if np.isfinite(vals).sum() > 10
    }


def fit_change(
    sittings: list[SittingScore], seed: int = 0, level: float = DEFAULT_INTERVAL_LEVEL, measure: Measure | None = None
) -> ChangeCalibration:
    """The bundle's change calibration (difference route) from a longitudinal set with retests: the SDC from
    the retest pairs; the interval's difficulty ``base + per_point * mean score`` fitted (non-negative least
    squares of the absolute error) on one half of the patients and the conformal residuals taken on the
    other. The changes between the retest films count as visit pairs too."""
    pairs = routed(visit_pairs(sittings) + visit_pairs(sittings, retest=1), measure)
    retests = _routed_retests(retest_pairs(sittings), measure)
    if len(pairs) < MIN_CHANGE_PAIRS:
        raise DatasetError(f"{len(pairs)} visit pairs scored; a change calibration needs at least {MIN_CHANGE_PAIRS}")
    if len(retests) < 10:
        raise DatasetError(
            f"{len(retests)} visit pairs filmed twice; the SDC needs at least 10 (make the set with --retest)"
        )
    change, truth = np.array([p.model for p in pairs]), np.array([p.truth for p in pairs])
    level_score = np.array([p.mean_score for p in pairs])
    first = first_half(np.array([p.patient for p in pairs]), seed)
    error = np.abs(truth - change)
    design = np.stack([np.ones_like(level_score), np.maximum(level_score, 0)], axis=1)
    base, per_point = non_negative_least_squares(design[first], error[first])
    base = max(float(base), 0.05 * max(float(error[first].mean()), 1e-3))
    same = routed(same_visit_pairs(sittings), measure)
    scores = np.sort(error[~first] / (base + per_point * np.maximum(level_score[~first], 0)))
    return ChangeCalibration(
        route="difference" if measure is None else "paired",
        sdc=round(smallest_detectable_change(*_retest_changes(retests)), 4),
        sdc_pairs=len(retests),
        base=round(base, 6),
        per_point=round(float(per_point), 6),
        scores=tuple(round(float(v), 5) for v in scores),
        level=level,
        zero_level=round(float(np.mean([p.model for p in same])), 4) if same else 0.0,
    )


def paired_measure(scored: ScoredSet, graph) -> Measure:  # noqa: ANN001 - svdh_runtime.paired.PairedGraph
    """The paired route's change of two sittings, from the scored films (matched by the hands they show)."""
    from svdh_runtime.progression import film_pairs, paired_change

    results = {str(sample.path): result for sample, result in scored.scored}

    def measure(first: SittingScore, second: SittingScore) -> float | None:
        matched = film_pairs([results[f] for f in first.films], [results[f] for f in second.films])
        return None if matched is None else float(sum(paired_change(graph, matched).values()))

    return measure
