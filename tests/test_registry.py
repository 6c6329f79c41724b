from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from harness import registry
from harness.errors import UsageError

PLUGIN = Path(__file__).parent / "plugin_pkg"


class FakeDist:
    def __init__(self, name: str, entries: dict[str, str]):
        self.metadata = {"Name": name}
        self.entry_points = [metadata.EntryPoint(k, v, "harness.strategies") for k, v in entries.items()]


def fake_distributions(monkeypatch, *dists):
    monkeypatch.setattr(registry.metadata, "distributions", lambda: list(dists))


def test_builtins_are_found_through_the_entry_point_group():
    found = registry.discover()
    assert {"all_frames", "ed_es", "subject_random", "slice_stratified"} <= set(found)
    assert found["ed_es"].package == "cine-harness"
    assert found["ed_es"].target == "harness.strategies.builtin:EdEsStrategy"


def test_same_name_from_two_packages_names_both(monkeypatch):
    fake_distributions(monkeypatch, FakeDist("pkg-a", {"dup": "a:A"}), FakeDist("pkg-b", {"dup": "b:B"}))
    with pytest.raises(UsageError, match="'dup' is registered twice: by package 'pkg-a'.*'pkg-b'"):
        registry.discover()


def test_discovery_imports_nothing(monkeypatch):
    fake_distributions(monkeypatch, FakeDist("pkg", {"ghost": "no_such_module_anywhere:Ghost"}))
    assert list(registry.discover()) == ["ghost"]  # the module does not exist; listing must not import it


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError, match="unknown strategy 'ed_ex'; did you mean 'ed_es'\\? available: .*all_frames"):
        registry.load("ed_ex")


def test_parameters_are_converted_and_unknown_ones_rejected():
    strategy = registry.load("subject_random", {"per_subject": "12"})
    assert registry.parameters(strategy) == {"per_subject": 12}
    with pytest.raises(UsageError, match="has no parameter 'budget'; its parameters: per_subject"):
        registry.load("subject_random", {"budget": "3"})


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The tiny plug-in package, really built and installed (into its own folder) by pip."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)  # setuptools builds in the source folder; keep the repository clean
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def _harness(args, site: Path, **kw):
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env, **kw)


def test_installed_plugin_is_listed_by_the_cli(installed_plugin):
    result = _harness(["strategies"], installed_plugin)
    assert result.returncode == 0, result.stderr
    assert "every_other" in result.stdout and "harness-every-other" in result.stdout


@pytest.mark.slow
def test_installed_plugin_runs_in_a_study(installed_plugin, tmp_path, cache):
    from tests.conftest import TINY_RUN

    out = tmp_path / "study"
    result = _harness(["run", "--strategy", "every_other,ed_es", "--n", "1,2", "--out", str(out),
                       "--cache-dir", str(cache), *TINY_RUN, "--seeds", "1"], installed_plugin, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert sum(name.startswith("every_other__source__n") for name in runs) == 2  # 2 budgets x 1 seed
    report = (out / "report.md").read_text()
    assert "every_other" in report
    assert "| every_other (oracle) | 1 |" in report and "| – |" in report  # one seed: no seed SD, shown as a dash


def test_strategy_parameters_take_the_type_of_their_field():
    """Issue 19.6: a path that looks like a number stays text; numbers and 'none' follow the field's type."""
    table = registry.load("subsets_file", {"path": "2024", "column": "7"})
    assert table.path == "2024" and table.column == "7"
    assert registry.load("subject_random", {"per_subject": "20"}).per_subject == 20
    assert registry.load("subject_random", {"per_subject": "none"}).per_subject is None
    with pytest.raises(UsageError, match=r"subject_random.per_subject=many: per_subject must be a whole number or none"):
        registry.load("subject_random", {"per_subject": "many"})
    with pytest.raises(UsageError, match="has no parameter 'size'; its parameters: per_subject"):
        registry.load("subject_random", {"size": "3"})


def test_a_numeric_path_parameter_reaches_the_strategy_as_text(capsys, tmp_path, monkeypatch):
    from harness.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "2024").write_text("subject\tslice\tframe\tv1\n")
    assert main(["run", "--strategy", "subsets_file", "--strategy-param", "subsets_file.path=2024",
                 "--strategy-param", "subsets_file.column=1", "--n", "99", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--n 99 is larger than the training pool" in err
