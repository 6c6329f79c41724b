"""Choosing frames before labelling (issue 20): what strategies may read, the selection model's view of the
pool, the label-free strategies, and budgets of expert minutes."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from harness import pool_view
from harness.api import KNOWN_COLUMNS, LABEL_COLUMNS, PREDICTION_COLUMNS, Pool, is_oracle, pool_for
from harness.contract import check_strategy, example_pool
from harness.cost import CONTOURS, IMAGES, CostModel, affordable, parse_cost_model
from harness.errors import StrategyError, UsageError
from harness.grid import select, stream_seeds
from harness.store import RunSpec
from harness.strategies.builtin import EdEsStrategy, SubjectRandomStrategy
from harness.strategies.label_free import (EdEsPredictedStrategy, EdEsTimingStrategy, ForegroundRandomStrategy,
                                   TypicalStrategy, UncertainStrategy, cycle_position, kmeans, spread_order)


# -- what a strategy may read ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spy:
    """Records the columns it is handed; reads ``column`` if set."""

    description: ClassVar[str] = "spy"
    uses: frozenset = frozenset({"predictions"})
    column: str = ""
    seen: list = dataclasses.field(default_factory=list, compare=False)

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        self.seen.append((tuple(pool.frames.columns), pool.embeddings is not None))
        rows = pool.frames_of(n)
        if self.column:
            rows = rows[rows[self.column].notna()]
        return rows.index[:3]


def _spec(pool: list[str], n: int = 2, cost: dict | None = None, strategy: str = "spy") -> RunSpec:
    return RunSpec(strategy=strategy, n=n, seed=0, fold=0, params={}, streams=stream_seeds(0), dataset="x",
                   split={"pool": pool, "validation": [], "test": []}, init="source", init_fingerprint="y",
                   train={}, cost=cost or {})


class _Dataset:
    """The part of a CineDataset that select() reads."""

    def __init__(self, pool: Pool, subjects_info: pd.DataFrame | None = None):
        self.index = pool.frames
        self.embeddings = pool.embeddings
        self.subjects_info = subjects_info

    def rows_of(self, subjects):
        return self.index[self.index["subject"].isin(subjects)]


def _full():
    pool = example_pool()
    view = (pool.frames[list(PREDICTION_COLUMNS)], pool.embeddings)
    base = Pool(pool.frames.drop(columns=list(PREDICTION_COLUMNS)), pool.subject_order)
    return base, view


def test_a_label_free_strategy_is_never_handed_label_columns():
    base, view = _full()
    for uses, embeddings in ((frozenset({"predictions"}), False), (frozenset({"embeddings"}), True),
                             (frozenset(), False), (frozenset({"labels"}), False)):
        spy = Spy(uses=uses)
        select(_spec(sorted(base.frames["subject"].unique())), spy, _Dataset(base), view)
        columns, got_embeddings = spy.seen[-1]
        assert set(KNOWN_COLUMNS) <= set(columns)
        assert ("labels" in uses) == bool(set(LABEL_COLUMNS) & set(columns)), (uses, columns)
        assert ("predictions" in uses) == bool(set(PREDICTION_COLUMNS) & set(columns)), (uses, columns)
        assert got_embeddings == embeddings


def test_reading_an_undeclared_column_is_one_clear_error_in_the_harness_and_in_the_contract_check():
    base, view = _full()
    subjects = sorted(base.frames["subject"].unique())
    with pytest.raises(StrategyError, match=r"read column 'phase' without declaring it: add \"labels\""):
        select(_spec(subjects), Spy(column="phase"), _Dataset(base), view)
    with pytest.raises(AssertionError, match="read column 'phase' without declaring it"):
        check_strategy(Spy(column="phase"))
    with pytest.raises(AssertionError, match="read column 'pred_phase'"):
        check_strategy(Spy(uses=frozenset(), column="pred_phase"))
    check_strategy(Spy(uses=frozenset({"labels"}), column="phase"))  # declared: an oracle, allowed
    with pytest.raises(AssertionError, match="uses names"):
        check_strategy(Spy(uses=frozenset({"lables"})))


def test_oracles_are_the_strategies_that_read_labels():
    from harness import registry

    oracles = {name for name, entry in registry.discover().items() if is_oracle(entry.load_class())}
    assert {"ed_es", "paper_esed", "paper_r_esed", "subsets_file"} <= oracles
    assert not oracles & {"ed_es_predicted", "ed_es_timing", "foreground_random", "uncertain", "typical",
                          "subject_random",
                          "slice_stratified", "all_frames", "paper_v", "paper_r"}


# -- the strategies ----------------------------------------------------------------------------------------------

def test_ed_es_predicted_takes_the_predicted_frames_of_every_slice():
    pool = pool_for(EdEsPredictedStrategy(), example_pool().frames, example_pool().subject_order)
    chosen = pool.frames.loc[EdEsPredictedStrategy().select(pool, 2, np.random.default_rng(0))]
    assert set(chosen["subject"]) == set(pool.subject_order[:2])
    assert chosen["pred_phase"].isin(["ED", "ES"]).all()
    for _, rows in chosen.groupby("subject"):
        assert len(rows) == 2 * rows["n_slices"].iloc[0]


def test_foreground_random_takes_only_images_with_predicted_lv_while_there_are_enough():
    full = example_pool()
    pool = pool_for(ForegroundRandomStrategy(), full.frames, full.subject_order)
    chosen = pool.frames.loc[ForegroundRandomStrategy().select(pool, 3, np.random.default_rng(1))]
    assert (chosen["pred_lv_area"] > 0).all()
    per = chosen.groupby("subject").size()
    assert (per == 2 * chosen.groupby("subject")["n_slices"].first()).all()  # ed_es's number of images
    # a subject with fewer foreground images than its budget: all of them, then the rest at random
    frames = full.frames.copy()
    frames.loc[(frames["slice"] > 0) | (frames["frame"] > 4), "pred_lv_area"] = 0  # 5 foreground images
    pool = pool_for(ForegroundRandomStrategy(), frames, full.subject_order)
    chosen = pool.frames.loc[ForegroundRandomStrategy().select(pool, 1, np.random.default_rng(1))]
    first = frames[frames["subject"] == full.subject_order[0]]
    assert set(first.index[first["pred_lv_area"] > 0]) <= set(chosen.index)


def test_uncertain_takes_the_most_uncertain_images_but_spreads_them():
    rows = pd.DataFrame({"subject": "a", "slice": np.repeat([0, 1], 10), "frame": np.tile(np.arange(10), 2),
                         "n_frames": 10, "n_slices": 2})
    score = np.zeros(20)
    score[[0, 1, 2, 3]] = [0.9, 0.8, 0.7, 0.6]  # four neighbouring frames of slice 0 are the most uncertain
    score[[15]] = 0.5
    order = spread_order(rows, score, per_slice=2, min_gap=0.25)
    first = rows.loc[order[:4]]
    # frames 1 and 2 are within a quarter cycle of frame 0; frame 3 is not; then slice 0 is full
    assert list(order[:3]) == [0, 3, 15]
    assert first.groupby("slice").size().max() <= 2
    gaps = first[first["slice"] == 0]["frame"].tolist()
    assert len(gaps) < 2 or min(abs(gaps[0] - gaps[1]), 10 - abs(gaps[0] - gaps[1])) >= 3
    # no spreading asked: plain descending uncertainty
    assert list(spread_order(rows, score, per_slice=20, min_gap=0.0)[:4]) == [0, 1, 2, 3]


def test_typical_takes_one_image_from_each_cluster():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=20, size=(4, 8))
    points = np.concatenate([c + rng.normal(size=(10, 8)) for c in centres])
    labels = kmeans(points, 4, np.random.default_rng(1))
    assert len(set(labels[i * 10] for i in range(4))) == 4  # the four blobs are found
    frames = pd.DataFrame({"subject": "a", "slice": np.arange(40) % 2, "frame": np.arange(40) // 2,
                           "slice_pos": (np.arange(40) % 2).astype(float), "spacing_mm": 1.0, "n_slices": 2,
                           "n_frames": 20})
    pool = Pool(frames, ("a",), embeddings=points.astype(np.float32))
    chosen = TypicalStrategy().select(pool, 1, np.random.default_rng(2))  # budget 2 x 2 slices = 4
    assert sorted(set(int(i) // 10 for i in chosen)) == [0, 1, 2, 3]


# -- the selection model's view ----------------------------------------------------------------------------------

def test_predicted_phases_and_cyclic_frame_error():
    frames = pd.DataFrame({"subject": "a", "slice": 0, "frame": np.arange(20),
                           "pred_lv_area": [300 - 10 * abs(f - 8) if f != 19 else 400 for f in range(20)]})
    frames.loc[8, "pred_lv_area"] = 50
    phase = pool_view.predicted_phases(frames)
    assert phase[19] == "ED" and phase[8] == "ES"
    assert pool_view.cyclic_distance(19, 0, 20) == 1 and pool_view.cyclic_distance(2, 12, 20) == 10
    index = frames.assign(phase=None, n_frames=20)
    index.loc[0, "phase"], index.loc[9, "phase"] = "ED", "ES"
    errors = pool_view.frame_errors(index, frames.assign(pred_phase=phase))
    assert errors[["ed_error", "es_error"]].iloc[0].tolist() == [1, 1]


def test_the_view_reads_no_mask_and_is_computed_once_per_subject_and_model(tmp_path):
    torch = pytest.importorskip("torch")
    from harness.data.phantom import phantom_dataset
    from harness.train import build_model

    dataset = phantom_dataset("target", 3, 0, 64, tmp_path / "phantom")
    made = []

    def make():
        made.append(1)
        return build_model("resnet18", None, (16, 16, 16, 16, 16), seed=0)

    subjects = dataset.subjects[:2]
    first = pool_view.ensure(dataset, subjects, "m1", make, tmp_path)
    assert made == [1] and first.computed == int(dataset.index["subject"].isin(subjects).sum())
    again = pool_view.ensure(dataset, subjects, "m1", make, tmp_path)
    assert made == [1] and again.computed == 0 and again.cached == first.computed  # read from the cache
    view, embeddings = pool_view.load(dataset, subjects, "m1", tmp_path)
    assert list(view.columns) == list(PREDICTION_COLUMNS) and len(view) == len(embeddings) == first.computed
    folder = pool_view.view_dir(tmp_path, dataset.fingerprint, "m1", "fp32")
    assert folder.name.endswith("-fp32-cpu-t2-r1")
    assert not pool_view._subject_file(folder, dataset.subjects[2]).exists()  # outside the pools: never computed
    # a cached file that cannot be read: one line from load, computed again by ensure
    broken = pool_view._subject_file(folder, subjects[0])
    whole = broken.read_bytes()
    for damage in (b"not a npz", whole[: len(whole) // 2], whole[:-40] + bytes(40)):  # garbage, truncated, damaged
        broken.write_bytes(damage)
        with pytest.raises(UsageError, match="cannot be read .* delete it"):
            pool_view.load(dataset, subjects, "m1", tmp_path)
    assert pool_view.ensure(dataset, subjects, "m1", make, tmp_path).computed > 0 and len(made) == 2
    pd.testing.assert_frame_equal(pool_view.load(dataset, subjects, "m1", tmp_path)[0], view)
    # masks play no part: garbage masks give the same view
    garbage = dataclasses.replace(dataset, masks=np.random.default_rng(0).integers(0, 4, dataset.masks.shape,
                                                                                  dtype=np.uint8))
    pool_view.ensure(garbage, subjects, "m2", make, tmp_path)
    other, _ = pool_view.load(garbage, subjects, "m2", tmp_path)
    pd.testing.assert_frame_equal(view, other)
    with pytest.raises(UsageError, match="view of subject .* is missing"):
        pool_view.load(dataset, dataset.subjects, "m1", tmp_path)
    del torch


# -- costs and budgets of expert minutes -------------------------------------------------------------------------

def test_costs_add_up():
    stack = pd.DataFrame({"slice_pos": np.tile(np.arange(10) / 9, 2)})  # 10 slices, ED + ES
    assert CONTOURS.total(stack) == pytest.approx(13.8)
    assert IMAGES.total(stack) == 20
    rv = parse_cost_model("contours:lv_endo,lv_epi,rv_endo")
    assert rv.total(stack) > CONTOURS.total(stack)
    per = CONTOURS.image_cost(stack)
    assert per[0] > per[4] < per[9]  # basal and apical slices cost more than mid ones


def test_a_cost_table_of_ones_own(tmp_path):
    table = tmp_path / "lab.toml"
    table.write_text('source = "timed"\ndraw = ["lv_endo"]\n[seconds.lv_endo]\nbasal = 60\nmid = 30\napical = 60\n')
    model = parse_cost_model(str(table))
    assert model.total(pd.DataFrame({"slice_pos": [0.0, 0.5, 1.0]})) == pytest.approx(2.5)
    assert CostModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    for text, problem in (('[seconds.lv_endo]\nbasal = 1\n', "exactly basal, mid and apical"),
                          ('[seconds.lv_endo]\nbasal = 1\nmid = -1\napical = 1\n', "positive"),
                          ('draw = ["rv"]\n[seconds.lv_endo]\nbasal = 1\nmid = 1\napical = 1\n', "draw must list"),
                          ('seconds = [', "not valid TOML"),
                          ('[seconds.lv_endo]\nbasal = true\nmid = 1\napical = 1\n', "must be numbers of seconds"),
                          ('draw = ["lv_endo", "lv_endo"]\n[seconds.lv_endo]\nbasal = 1\nmid = 1\napical = 1\n',
                           "each once")):
        table.write_text(text)
        with pytest.raises(UsageError, match=problem):
            parse_cost_model(str(table))
    with pytest.raises(UsageError, match="no such file"):
        parse_cost_model(str(tmp_path / "missing.json"))
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(UsageError, match="it is a folder"):
        parse_cost_model(str(tmp_path / "folder.toml"))
    with pytest.raises(UsageError, match="use images, contours"):
        parse_cost_model("minutes")
    with pytest.raises(UsageError, match="unknown structure rv_epi"):
        parse_cost_model("contours:lv_endo,rv_epi")
    with pytest.raises(UsageError, match="each structure once"):
        parse_cost_model("contours:lv_endo,lv_endo")
    table.write_bytes(b"\xff\xfe[seconds]")
    with pytest.raises(UsageError, match="not UTF-8"):
        parse_cost_model(str(table))


@pytest.mark.parametrize("strategy", [EdEsStrategy(), SubjectRandomStrategy(), EdEsPredictedStrategy(),
                                      EdEsTimingStrategy(), ForegroundRandomStrategy(), UncertainStrategy(),
                                      TypicalStrategy()])
def test_budgets_in_minutes_are_nested_paired_and_within_budget(strategy):
    base, view = _full()
    subjects = sorted(base.frames["subject"].unique())
    name = type(strategy).__name__
    chosen = {m: select(_spec(subjects, m, CONTOURS.to_dict(), name), strategy, _Dataset(base), view)
              for m in (10, 25, 60)}
    for m, rows in chosen.items():
        assert 0 < CONTOURS.total(rows) <= m + 1e-9
    assert set(chosen[10].index) <= set(chosen[25].index) <= set(chosen[60].index)
    # paired: every strategy starts with the same subject (the run's subject order)
    order = np.random.default_rng(stream_seeds(0)["subset"]).permutation(subjects)
    assert chosen[10]["subject"].iloc[0] == order[0] or set(chosen[10]["subject"]) == {order[0]}


def test_affordable_is_the_longest_start_within_budget():
    frames = pd.DataFrame({"slice_pos": [0.0, 0.5, 1.0, 0.5]}, index=[10, 11, 12, 13])
    per = CONTOURS.image_cost(frames)  # 0.8, 0.567, 0.7, 0.567 min
    ranking = pd.Index([11, 10, 13, 12])
    assert list(affordable(ranking, frames, CONTOURS, per[1] + per[0])) == [11, 10]
    assert list(affordable(ranking, frames, CONTOURS, per[1] + per[0] - 0.01)) == [11]
    assert len(affordable(ranking, frames, CONTOURS, 0.1)) == 0


def test_a_model_aware_strategy_without_a_selection_model_is_a_clear_error():
    from harness.grid import StudySettings
    from harness.runner import Study

    for inits in (("random",), ("source", "random")):  # every init needs one, not just some
        with pytest.raises(UsageError, match="--init random has no trained model to predict with; give --selection"):
            Study(StudySettings(strategies=("ed_es", "uncertain"), inits=inits), store=None)
    with pytest.raises(UsageError, match="--budget-minutes: paper_r cannot spend a budget of expert minutes"):
        Study(StudySettings(strategies=("ed_es", "paper_r"), budget_minutes=(30,), cost_model=CONTOURS.to_dict()),
              store=None)
    with pytest.raises(UsageError, match="--selection-model 'model.pt': give checkpoint:PATH"):
        Study(StudySettings(strategies=("uncertain",), selection_model="model.pt"), store=None)


def test_a_study_computes_the_view_of_its_pool_subjects_only(tmp_path):
    """With one split, test and validation subjects are in no pool: their images are never predicted; the pool
    subjects' are, once; a study without model-aware strategies computes nothing."""
    from harness import train
    from harness.grid import StudySettings, fold_splits
    from harness.runner import Study
    from harness.train.model import architecture

    path = tmp_path / "selection.pt"
    train.save_checkpoint(train.build_model("resnet18", seed=0), path,
                          {"architecture": architecture("resnet18", train.DECODER_CHANNELS, 128)})
    settings = StudySettings(strategies=("uncertain",), inits=(f"checkpoint:{path}",), folds=1, target_subjects=6,
                             test_subjects=2, val_subjects=1, ns=(1,))
    study = Study(settings, store=None, cache=tmp_path / "cache")
    dataset = study.load_target()
    splits = fold_splits(dataset.subjects, settings)
    models = study.selection_models(study.init_fingerprints())
    costs = study.make_views(dataset, splits, models)
    (key, view), = costs.items()
    folder = pool_view.view_dir(tmp_path / "cache", dataset.fingerprint, key, study.settings.train.precision)
    stored = {p.name for p in folder.glob("*.npz")}
    expected = {pool_view._subject_file(folder, s).name for s in splits[0]["pool"]}
    assert stored == expected and len(expected) == 3
    assert view["computed_images"] == int(dataset.index["subject"].isin(splits[0]["pool"]).sum())
    assert view["frame_error"]["subjects"] == 3
    assert study.make_views(dataset, splits, models)[key]["computed_images"] == 0  # the second time: the cache


@pytest.mark.parametrize("strategy", [ForegroundRandomStrategy(scope="pool"), UncertainStrategy(scope="pool")])
def test_pool_wide_variants_spread_the_ed_es_number_of_images_over_the_pool_nested_across_n(strategy):
    base, view = _full()
    subjects = sorted(base.frames["subject"].unique())
    chosen = {n: select(_spec(subjects, n, strategy=type(strategy).__name__), strategy, _Dataset(base), view)
              for n in (1, 2, 4)}
    for n, rows in chosen.items():
        first = base.frames[base.frames["subject"].isin(
            np.random.default_rng(stream_seeds(0)["subset"]).permutation(subjects)[:n])]
        assert len(rows) == 2 * first.groupby("subject")["slice"].nunique().sum()  # ed_es's cost at n
    assert chosen[4]["subject"].nunique() > 2  # beyond the first n subjects: spread over the pool
    assert set(chosen[1].index) <= set(chosen[2].index) <= set(chosen[4].index)
    with pytest.raises(StrategyError, match="scope must be subject or pool"):
        dataclasses.replace(strategy, scope="all").select(pool_for(strategy, example_pool().frames,
                                                                   example_pool().subject_order), 1,
                                                          np.random.default_rng(0))


@dataclass(frozen=True)
class Sneak:
    description: ClassVar[str] = "reads phase in the ways pandas allows"
    uses: ClassVar[frozenset] = frozenset({"predictions"})
    how: str = "list"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
        rows = pool.frames_of(n)
        picked = {"list": lambda: rows[["phase"]], "query": lambda: rows.query("phase == 'ED'"),
                  "attribute": lambda: rows[rows.phase == "ED"]}[self.how]()
        return picked.index


@pytest.mark.parametrize("how", ["list", "query", "attribute"])
def test_every_way_of_reading_an_undeclared_column_is_named(how):
    base, view = _full()
    with pytest.raises(StrategyError, match="read column 'phase' without declaring it"):
        select(_spec(sorted(base.frames["subject"].unique())), Sneak(how), _Dataset(base), view)
    with pytest.raises(AssertionError, match="read column 'phase' without declaring it"):
        check_strategy(Sneak(how))


def test_a_view_that_misses_pool_images_is_refused_and_a_shuffled_superset_is_aligned():
    base, (table, vectors) = _full()
    subjects = sorted(base.frames["subject"].unique())
    pool_subjects = subjects[:4]
    spy = Spy(uses=frozenset({"predictions", "embeddings"}))
    shuffled = np.random.default_rng(0).permutation(len(table))  # a view of more subjects, in another order

    @dataclass(frozen=True)
    class ByEmbedding:
        description: ClassVar[str] = "the image whose first embedding value is largest, per subject"
        uses: ClassVar[frozenset] = frozenset({"embeddings", "predictions"})

        def select(self, pool: Pool, n: int, rng: np.random.Generator) -> pd.Index:
            first = pd.Series(pool.embeddings[:, 0], index=pool.frames.index)
            return pd.Index([first[pool.frames["subject"] == s].idxmax() for s in pool.subjects(n)])

    chosen = select(_spec(pool_subjects), ByEmbedding(), _Dataset(base), (table.iloc[shuffled], vectors[shuffled]))
    truth = pd.Series(vectors[:, 0], index=table.index)
    for row in chosen.index:  # the embedding handed with each row is that row's own
        subject_rows = base.frames.index[base.frames["subject"] == base.frames.loc[row, "subject"]]
        assert row == truth[subject_rows].idxmax()
    with pytest.raises(StrategyError, match="view lacks .* images of the pool"):
        select(_spec(pool_subjects), spy, _Dataset(base), (table.iloc[5:], vectors[5:]))


@pytest.mark.parametrize("flags, problem", [
    (["--n", "2", "--budget-minutes", "30"], "give --n (budgets of subjects) or --budget-minutes"),
    (["--budget-minutes", ""], "--budget-minutes '' is not a comma list"),
    (["--budget-minutes", "30,x"], "--budget-minutes '30,x' is not a comma list"),
    (["--budget-minutes", "30", "--cost-model", "images"], "needs a cost model in minutes"),
    (["--budget-minutes", "30", "--strategy", "ed_es,paper_r"], "paper_r cannot spend a budget of expert minutes"),
    (["--cost-model", "nowhere.toml"], "--cost-model nowhere.toml: no such file"),
    (["--strategy", "uncertain", "--init", "random"], "--init random has no trained model"),
])
def test_bad_cost_and_budget_flags_end_in_one_line(flags, problem, tmp_path, capsys):
    from harness.cli import main

    assert main(["run", *flags, "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and "Traceback" not in err and len(err.splitlines()) == 1, err


# -- the report ----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_study_in_expert_minutes_end_to_end(tmp_path):
    """--budget-minutes through run and report: runs named m<budget>, each within its budget and recording
    what it cost; the oracle named as such in every table; budgets worded in minutes; cost table and figure."""
    from harness.cli import main
    from tests.conftest import TINY_RUN

    out = tmp_path / "study"
    flags = [a for a in TINY_RUN] + ["--target-subjects", "10", "--test-subjects", "6", "--val-subjects", "1"]
    assert main(["run", *flags, "--strategy", "ed_es,ed_es_predicted,uncertain", "--budget-minutes", "10,20",
                 "--reference", "ed_es@20", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    study = json.loads((out / "study.json").read_text())
    assert study["strategy_uses"]["ed_es"] == ["labels"] and study["cost_model"]["name"] == "contours"
    assert list(study["pool_views"].values())[0]["computed_images"] > 0
    runs = [p for p in (out / "runs").iterdir() if not p.name.startswith("base")]
    assert len(runs) == 3 * 2 * 2 and all("__m10__" in p.name or "__m20__" in p.name for p in runs)
    for run in runs:
        budget = int(run.name.split("__m")[1].split("__")[0])
        status = json.loads((run / "status.json").read_text())
        selection = pd.read_csv(run / "selection.csv")
        assert 0 < status["cost"]["minutes"] <= budget + 1e-6
        assert status["cost"]["minutes"] == pytest.approx(CONTOURS.total(selection), abs=1e-3)
    report = (out / "report.md").read_text()
    assert "| ed_es (oracle) |" in report and "| ed_es |" not in report
    assert "## Cost of labelling" in report and "budget (min)" in report and (out / "cost.png").exists()
    start = report.index("## How much target data is enough")
    guideline = report[start:report.index("\n## ", start + 5)]
    assert "n = " not in guideline and "expert minutes" in guideline
    assert "Oracles: ed_es read the labels" in report
    assert "Annotation cost: cost model `contours`, drawing lv_endo, lv_epi: 48 / 34 / 42 expert seconds" in report
    costs = pd.read_csv(out / "tables" / "costs.csv")
    assert set(costs["strategy"]) == {"ed_es (oracle)", "ed_es_predicted", "uncertain"}


def test_the_cheapest_configuration_needs_one_reference_and_is_never_an_oracle():
    from harness.analysis import _cheapest

    ni = pd.DataFrame({"strategy": ["ed_es (oracle)", "ed_es (oracle)", "uncertain", "uncertain", "typical",
                                    "typical"],
                       "n": [10, 10, 10, 10, 20, 20], "metric": ["dice_lv", "dice_my"] * 3,
                       "non_inferior": [True, True, True, False, True, True], "reference": "ed_es (oracle)@30"})
    costs = pd.DataFrame({"strategy": ["ed_es (oracle)", "uncertain", "typical"], "n": [10, 10, 20],
                          "metric": "dice_lv", "expert_minutes": [9.0, 9.5, 19.0]})
    found = _cheapest(ni, costs, ("ed_es (oracle)", 30))
    # the oracle is cheapest but no lab can run it; uncertain failed MY: typical at 20 is the answer
    assert found[["strategy", "n"]].iloc[0].tolist() == ["typical", 20] and len(found) == 1
    assert _cheapest(ni, costs, None).empty  # no common reference: nothing to rank


def test_ed_es_named_by_metadata_are_known_before_labelling_and_those_found_from_labels_are_not():
    from harness.grid import with_hints

    frames = pd.DataFrame({"subject": ["a"] * 3 + ["b"] * 3, "frame": [0, 5, 9] * 2})
    info = pd.DataFrame({"subject": ["a", "b"], "ed": [0, 0], "es": [5, 9], "source": ["metadata", "LV area"]})
    hinted = with_hints(frames, info)
    assert hinted["phase_hint"].tolist() == ["ED", "ES", None, None, None, None]  # b's came from its labels
    spy = Spy(uses=frozenset())
    base, view = _full()
    subjects = sorted(base.frames["subject"].unique())
    info = pd.DataFrame({"subject": subjects, "ed": 1, "es": 8, "source": "Info.cfg"})
    select(_spec(subjects), spy, _Dataset(base, info), view)
    assert "phase_hint" in spy.seen[-1][0] and "phase" not in spy.seen[-1][0]


# -- timing: trigger times and the RR interval are known before labelling ----------------------------------------

def _cine(frames: int, rr: float, triggers: list[float] | None, slices: int = 3, subject: str = "a") -> pd.DataFrame:
    rows = [{"subject": subject, "slice": sl, "frame": f, "n_frames": frames, "n_slices": slices, "rr_ms": rr,
             "trigger_ms": np.nan if triggers is None else triggers[f] + 0.4 * sl}
            for sl in range(slices) for f in range(frames)]
    return pd.DataFrame(rows)


def test_ed_es_timing_takes_the_frame_nearest_the_r_wave_and_the_one_a_qt_interval_after_it():
    rule = EdEsTimingStrategy()
    # 20 frames 40 ms apart from 20 ms after the trigger in a 750 ms cycle (a slice whose breath-hold had a
    # faster heart than the acquisition was planned for): frame 18 (740 ms) is 10 ms before the next R wave,
    # frame 0 20 ms after one, frame 19 30 ms after; ES at 400 x sqrt(0.75) = 346 ms: frame 8 (340 ms)
    sunny = _cine(20, 750.0, [20 + 40 * f for f in range(20)])
    chosen = sunny.loc[rule.phases(sunny)]
    assert chosen["frame"].unique().tolist() == [18, 8] and len(chosen) == 2 * 3
    # no RR interval in the header: the cycle is the frames' own spacing (25 x 40 ms), ES at 400 ms -> frame 10
    spaced = _cine(25, np.nan, [40.0 * f for f in range(25)])
    assert cycle_position(spaced)[1] == pytest.approx(np.full(len(spaced), 1000.0))
    # slices 0.4 ms apart in time, rows in any order: the spacing is taken within each slice (found by the
    # lowest-versions CI, whose numpy sorted equal frames differently and gave 1005 ms)
    shuffled = spaced.assign(trigger_ms=spaced["trigger_ms"] + 30.0 * (spaced["slice"] == 2)).sample(
        frac=1.0, random_state=1)  # slice 2 triggered 30 ms later: differences across slices are not the spacing
    assert cycle_position(shuffled)[1] == pytest.approx(np.full(len(spaced), 1000.0))
    assert spaced.loc[rule.phases(spaced), "frame"].unique().tolist() == [0, 10]
    # no timing at all (NIfTI): frames spread over an assumed 1000 ms cycle
    nifti = _cine(30, np.nan, None)
    assert nifti.loc[rule.phases(nifti), "frame"].unique().tolist() == [0, 12]
    # a faster heart: ES earlier in ms, QT shortens with sqrt(RR)
    fast = _cine(20, 500.0, [25.0 * f for f in range(20)])
    assert fast.loc[rule.phases(fast), "frame"].unique().tolist() == [0, 11]  # 400 x sqrt(0.5) = 283 ms
    assert fast.loc[EdEsTimingStrategy(qtc_ms=300).phases(fast), "frame"].unique().tolist() == [0, 8]
    # a pool of ED and ES only (ACDC): two different frames, never one twice
    two = _cine(30, 800.0, [800 / 30 * f for f in range(30)])
    two = two[two["frame"].isin([0, 1])]
    assert sorted(two.loc[rule.phases(two), "frame"].unique().tolist()) == [0, 1]
    # each slice in its own cycle: ED and ES by the median over slices of how far each image is from its target
    mixed = pd.concat([_cine(20, 750.0, [20 + 40 * f for f in range(20)], slices=2),
                       _cine(20, 800.0, [40.0 * f for f in range(20)], slices=1).assign(slice=2)])
    assert mixed.loc[rule.phases(mixed), "frame"].unique().tolist() == [18, 8]
    # an implausible cycle is not believed: the frame spacing is used instead
    odd = _cine(25, 0.001, [40.0 * f for f in range(25)])
    assert odd.loc[rule.phases(odd), "frame"].unique().tolist() == [0, 10]
    with pytest.raises(StrategyError, match="qtc_ms must be between 100 and 700"):
        EdEsTimingStrategy(qtc_ms=4).phases(sunny)
    for bad in (sunny.assign(n_frames=0), sunny.assign(n_frames=12), sunny.assign(n_frames=np.nan)):
        with pytest.raises(StrategyError, match="do not fit a cine of n_frames"):
            rule.phases(bad)


def test_ed_es_timing_is_handed_the_timing_and_never_the_labels():
    check_strategy(EdEsTimingStrategy())
    base, view = _full()
    subjects = sorted(base.frames["subject"].unique())
    rows = select(_spec(subjects, 3, strategy="ed_es_timing"), EdEsTimingStrategy(), _Dataset(base), None)
    assert rows.groupby("subject")["frame"].nunique().eq(2).all() and rows["subject"].nunique() == 3
    timed = base.frames.drop(columns=["trigger_ms", "rr_ms"])  # a pool made before 0.8: timing unknown, not an error
    pool = pool_for(EdEsTimingStrategy(), timed, base.subject_order)
    assert pool.frames[["trigger_ms", "rr_ms"]].isna().all().all()
    assert not set(LABEL_COLUMNS) & set(pool.frames.columns)


def test_phantom_subjects_carry_retrospective_timing_that_the_images_do_not_depend_on(monkeypatch):
    from harness.data import phantom

    stack = phantom.subject_stack(0, "target", 2)
    frames = stack.labels.shape[1]
    rr = phantom.cycle_ms(0, "target", 2)
    assert 60_000 / 90 <= rr <= 60_000 / 55 and np.all(stack.rr_ms == rr)
    assert np.allclose(stack.trigger_ms, np.arange(frames) * rr / frames)
    assert stack.trigger_ms.shape == stack.rr_ms.shape == stack.labels.shape[:2]
    assert len({phantom.cycle_ms(0, "target", k) for k in range(8)}) > 4  # heart rates differ between subjects
    monkeypatch.setattr(phantom, "cycle_ms", lambda *args: 400.0)  # another heart rate: the same images
    other = phantom.subject_stack(0, "target", 2)
    assert np.all(other.rr_ms == 400.0) and np.array_equal(other.images, stack.images)
