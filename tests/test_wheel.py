"""The package as a user gets it: a wheel built with `python -m build`, installed into a new virtual environment
(its dependencies are this environment's, so nothing is downloaded twice), then run from there: its version, its
package data (the serve page, the default matcher, py.typed) and a tiny train and predict."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO, make_folder


def run(*command, cwd: Path) -> subprocess.CompletedProcess:
    """In `cwd` outside the checkout: `python -c` puts the current folder first on sys.path."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def test_wheel_builds_installs_and_runs_in_a_new_venv(tmp_path):
    import catalens

    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and egg-info behind
    shutil.copytree(REPO / "catalens", source / "catalens", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # --no-isolation: built with this environment's setuptools (the test extras), so nothing is downloaded
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", source, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("catalens-*.whl"))
    assert wheel.name.startswith(f"catalens-{catalens.__version__}-")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python, installed = venv / "bin" / "python", venv / "bin" / "catalens"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run(python, "-c", purelib, cwd=tmp_path).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the venv's own
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    assert run(installed, "--version", cwd=tmp_path).stdout.strip() == f"catalens {catalens.__version__}"
    where = run(python, "-c", "import catalens, pathlib; print(pathlib.Path(catalens.__file__).parent)",
                cwd=tmp_path).stdout
    package = Path(where.strip())
    assert package.is_relative_to(venv), package  # the wheel's copy, not this checkout
    for data in ("py.typed", "apps/serve/page.html", "apps/match/default_matcher.json"):
        assert (package / data).is_file(), data
    run(python, "-c", "from catalens.apps.match import DEFAULT_MATCHER, Matcher; assert Matcher.load(DEFAULT_MATCHER)",
        cwd=tmp_path)

    shop = make_folder(tmp_path / "shop", per_class=6)
    run(installed, "train", "--data", shop, "--model", "cnn3", "--epochs", "1", "--input-size", "32", "--out",
        tmp_path / "run", cwd=tmp_path)
    predicted = run(installed, "predict", tmp_path / "run", shop / "blob", "--out", tmp_path / "p.csv", cwd=tmp_path)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 1 + 6 and "blob" in lines[1], predicted.stderr
