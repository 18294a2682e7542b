"""The public API type-checks: mypy on every module behind what `catalens/__init__.py` exports (its _LAZY
table, read here, so a new export is checked too). Errors in the modules they import are not reported
(follow_imports = silent in pyproject.toml), but their types are used."""

import subprocess
import sys

from conftest import REPO


def public_modules() -> list[str]:
    import catalens

    files = ["catalens/__init__.py"]
    for module in sorted(set(catalens._LAZY.values())):
        path = REPO / "catalens" / module.replace(".", "/")
        files.append(str((path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(REPO)))
    return files


def test_public_api_type_checks(tmp_path):
    files = public_modules()
    assert "catalens/rundir/run.py" in files and "catalens/engine/train.py" in files
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *files],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Success: no issues found" in result.stdout, result.stdout[-4000:]
