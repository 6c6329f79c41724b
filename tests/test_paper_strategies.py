"""The published subset family and the replay of published subsets (image_subsets.tsv)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import registry
from harness.api import FRAME_COLUMNS, Pool, StrategyError
from harness.contract import check_strategy, example_pool
from harness.strategies.paper import PaperREsedStrategy, PaperRStrategy, PaperVStrategy, SubsetsFileStrategy
from tests.conftest import shared


def test_r_subsets_match_v_sizes_spread_over_the_pool_and_nest():
    pool = example_pool(subjects=6)
    rng = np.random.default_rng(0)
    sizes, chosen = {}, {}
    for n in (1, 3, 5):
        v = PaperVStrategy().select(pool, n, rng)
        r = PaperRStrategy().select(pool, n, np.random.default_rng(n))
        assert len(r) == len(v) and pd.Index(r).is_unique
        sizes[n], chosen[n] = len(r), set(r)
    assert chosen[1] <= chosen[3] <= chosen[5], "r-subsets are nested, as published"
    assert pool.frames.loc[list(chosen[3]), "subject"].nunique() == 6, "drawn from every pool subject"
    esed = PaperREsedStrategy().select(pool, 2, rng)
    assert len(esed) == len(registry.load("ed_es").select(pool, 2, rng))


def _pool_like(table: pd.DataFrame) -> Pool:
    """A frame index holding exactly the images of the published table (the 7T images are not public)."""
    rows = table.rename(columns={"Id": "subject"})[["subject", "slice", "frame"]].copy()
    rows["subject"] = rows["subject"].astype(str)
    rows["phase"] = None
    rows["slice_pos"] = rows.groupby("subject")["slice"].transform(lambda s: s / max(s.max(), 1))
    rows["lv_area"], rows["spacing_mm"] = 100, 1.4
    rows["n_slices"] = rows.groupby("subject")["slice"].transform("nunique")
    rows["n_frames"] = rows.groupby("subject")["frame"].transform("nunique")
    rows["trigger_ms"], rows["rr_ms"] = np.nan, np.nan  # the published tables carry no timing
    rows.index = rows.index * 2 + 5
    return Pool(frames=rows[list(FRAME_COLUMNS)], subject_order=tuple(sorted(rows["subject"].unique())))


def test_published_subsets_replay_exactly_with_the_published_counts():
    path = shared("cmr-seg-tl", "image_subsets.tsv")
    table = pd.read_csv(path, sep="\t")
    pool = _pool_like(table)
    counts = {}
    for column in ("v{n}", "r{n}"):
        for n in (1, 3, 7):
            rows = SubsetsFileStrategy(path=str(path), column=column).select(pool, n, np.random.default_rng(0))
            counts[column.format(n=n)] = len(rows)
            flagged = table[table[column.format(n=n)]]
            got = pool.frames.loc[rows, ["subject", "slice", "frame"]].astype(str)
            want = flagged.rename(columns={"Id": "subject"})[["subject", "slice", "frame"]].astype(str)
            assert sorted(map(tuple, got.to_numpy())) == sorted(map(tuple, want.to_numpy()))
    for column in ("esed", "r_esed"):
        counts[column] = len(SubsetsFileStrategy(path=str(path), column=column).select(pool, 14, None))
    assert counts == {"v1": 306, "v3": 1001, "v7": 2626, "r1": 306, "r3": 1001, "r7": 2626, "esed": 448,
                      "r_esed": 448}
    v3 = SubsetsFileStrategy(path=str(path), column="v{n}").select(pool, 3, None)
    assert sorted(pool.frames.loc[v3, "subject"].unique()) == ["17", "23", "44"]


def test_subsets_file_reads_file_names_and_keeps_the_contract(tmp_path):
    pool = example_pool(subjects=4)
    frames = pool.frames
    table = pd.DataFrame({"file": [f"{r.subject}_slice{r.slice:03d}_frame{r.frame:03d}-image.png"
                                   for r in frames.itertuples()]})
    for n in range(1, 5):  # v{n}: all images of the first n subjects of the pool order
        table[f"v{n}"] = frames["subject"].isin(pool.subject_order[:n]).map({True: "TRUE", False: "FALSE"}).to_numpy()
    path = tmp_path / "subsets.csv"
    table.to_csv(path, index=False)
    check_strategy(SubsetsFileStrategy(path=str(path)), pool)
    assert SubsetsFileStrategy(path=str(path)).table_sha256


def test_subsets_file_errors_name_the_fix(tmp_path):
    pool = example_pool(subjects=3)
    with pytest.raises(StrategyError, match="needs its table: --strategy-param subsets_file.path"):
        SubsetsFileStrategy().select(pool, 1, None)
    path = tmp_path / "t.tsv"
    pd.DataFrame({"Id": ["sub-00", "nobody"], "slice": [0, 0], "frame": [0, 0], "v1": [True, True]}).to_csv(
        path, sep="\t", index=False)
    with pytest.raises(StrategyError, match="1 images of subset 'v1' are not in the training pool .* nobody"):
        SubsetsFileStrategy(path=str(path)).select(pool, 1, None)
    with pytest.raises(StrategyError, match="no subset column 'v2' for n=2 .* it has v1"):
        SubsetsFileStrategy(path=str(path)).select(pool, 2, None)
