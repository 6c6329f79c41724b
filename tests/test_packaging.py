"""The wheel installs one top-level package, ``harness`` (issue 22.4): the repository's strategies/ and reports/
become harness.strategies and harness.reports, so no other package named ``strategies`` or ``reports`` collides."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import shutil

    out = tmp_path_factory.mktemp("wheel")
    source = out / "src"  # a copy: a build/ left in the checkout could carry files of deleted modules
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "studies", "artifacts", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, cwd=out, capture_output=True)
    (found,) = out.glob("cine_harness-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_has_one_top_level_package_and_its_entry_points_resolve(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"harness"}, top
    for path in ("harness/strategies/builtin.py", "harness/strategies/label_free.py", "harness/reports/render.py",
                 "harness/reports/templates/report.html.j2", "harness/reports/templates/report.md.j2"):
        assert path in names, path
    assert not any(name.startswith(("tests/", "bench/", "strategies/", "reports/")) for name in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    targets = [line.split("=", 1)[1].strip() for line in text.splitlines() if " = " in line and ":" in line]
    strategies = [t for t in targets if not t.startswith("harness.cli")]
    assert strategies and all(t.startswith("harness.strategies.") for t in strategies), strategies

    # installed on its own (outside the repository), every entry point loads and the report templates are found
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    check = (
        "import importlib, importlib.util, jinja2, harness, harness.reports.render as r\n"
        f"assert harness.__file__.startswith({str(site)!r}), harness.__file__\n"
        f"assert r.__file__.startswith({str(site)!r}), r.__file__\n"
        "jinja2.Environment(loader=jinja2.PackageLoader('harness.reports', 'templates')).get_template("
        "'report.html.j2')\n"
        f"for target in {strategies!r}:\n"
        "    module, _, name = target.partition(':')\n"
        "    getattr(importlib.import_module(module), name)\n"
        "assert importlib.util.find_spec('strategies') is None and importlib.util.find_spec('reports') is None\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
