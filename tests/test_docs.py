"""The documentation site: `mkdocs build --strict` passes (a broken link, a missing page or an API reference that
does not resolve fails it), and the commands of Getting started run as they are written, on real photos."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, bash_blocks, run_cli, shared


def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "catalens.rundir.run.Model" in reference and "probabilities" in reference  # mkdocstrings rendered


def test_getting_started_install_is_the_readme_quick_start():
    readme = bash_blocks(REPO / "README.md", "## Quick start")[0]
    assert bash_blocks(REPO / "docs" / "getting-started.md", "## Install")[0] == readme


@pytest.mark.integration  # not `alone`: what it checks (exit codes, files) does not depend on the ladder's length
def test_getting_started_commands_run_on_real_photos(tmp_path):
    """The task's commands, word for word, on 8 training and 4 validation photos per class of clothing-small."""
    source = shared("clothing-small")
    for split, count in (("train", 8), ("validation", 4)):
        for folder in sorted((source / split).iterdir()):
            target = tmp_path / "clothes" / split / folder.name
            target.mkdir(parents=True)
            for photo in sorted(folder.iterdir())[:count]:
                shutil.copy(photo, target / photo.name)
    commands = bash_blocks(REPO / "docs" / "getting-started.md", "## A real task")[0]
    assert [command.split()[1] for command in commands] == ["catalog", "train", "evaluate", "predict", "sort"]
    for command in commands:
        words = command.split()
        assert words[0] == "catalens"
        result = run_cli(*words[1:], cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr[-3000:])
    assert (tmp_path / "runs" / "clothes" / "eval" / "report.md").exists()
    assert len((tmp_path / "shoes.csv").read_text().splitlines()) == 1 + 4
    sorted_photos = [path for path in (tmp_path / "sorted").rglob("*.jpg")]
    assert len(sorted_photos) == 40
