"""What the selection model's view of the pool costs in a study the size of the default one (24 phantom
subjects, 3 folds): computed afresh into a copy of the cache without views, then read again (what a second
study pays). Needs the phantom and base model cached (run the default study once first).

    python bench/pool_view_cost.py
"""
import shutil
import tempfile
import time
from pathlib import Path

from harness.grid import StudySettings, fold_splits
from harness.runner import Study

cache = Path(tempfile.mkdtemp())
home = Path.home() / ".cache/cine-harness"
shutil.copytree(home / "phantom", cache / "phantom"); shutil.copytree(home / "models", cache / "models")
s = StudySettings(strategies=("uncertain",))
study = Study(s, store=None, cache=cache)
data = study.load_target(); splits = fold_splits(data.subjects, s)
models = study.selection_models(study.init_fingerprints())
t = time.perf_counter(); first = study.make_views(data, splits, models); t1 = time.perf_counter() - t
t = time.perf_counter(); again = study.make_views(data, splits, models); t2 = time.perf_counter() - t
v = list(first.values())[0]
print(f"first: {v['computed_images']} images in {v['seconds']} s ({v['seconds_per_1000_images']} s/1000), make_views {t1:.1f} s")
print(f"second: computed {list(again.values())[0]['computed_images']}, make_views {t2:.2f} s (cached {list(again.values())[0]['cached_images']})")
shutil.rmtree(cache)
