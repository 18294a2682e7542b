"""The real `catalens` command: contract forms, JSON keys, one-line errors with no traceback."""

import json

import pytest
from conftest import add_bad_files, make_folder, run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    import catalens

    root = tmp_path_factory.mktemp("cli-run")
    data = make_folder(root / "shop", per_class=4)
    return catalens.train(data=str(data), model="cnn3", out=str(root / "run"), epochs=1, input_size=32,
                          workers=0).run_dir


def assert_one_line_error(result, fragment: str):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0]


def test_catalog_stats_json(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=5)
    add_bad_files(data)
    result = run_cli("catalog", "stats", str(data), "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["items"] == 15 and stats["products"] == 15 and stats["classes"] == 3
    assert stats["per_class"] == {"blob": 5, "stripes_h": 5, "stripes_v": 5}
    assert stats["imbalance_ratio"] == 1.0
    assert sorted(p["ref"].rsplit("/", 1)[-1] for p in stats["problems"]) == ["empty.jpg", "notes.jpg", "truncated.jpg"]
    assert all(set(p) == {"ref", "reason"} for p in stats["problems"])


def test_catalog_stats_table(tmp_path):
    result = run_cli("catalog", "stats", str(make_folder(tmp_path / "shop", per_class=2)))
    assert result.returncode == 0 and "imbalance ratio" in result.stderr + result.stdout


def test_text_from_the_data_is_printed_literally(tmp_path, capsys):
    """File, class and package names with brackets are printed as they are, never read as rich markup (which
    would print `b/xy.jpg`, a file that does not exist, for `b/x[bold]y.jpg`)."""
    data = make_folder(tmp_path / "shop", per_class=2)
    (data / "[red]sale").mkdir()
    (data / "blob" / "blob_1.png").replace(data / "[red]sale" / "[x]1.png")
    (data / "stripes_h" / "x[bold]y.jpg").write_text("not an image")
    result = run_cli("catalog", "stats", str(data))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "stripes_h/x[bold]y.jpg: not an image" in output and "[red]sale" in output, output
    from catalens.progress import info, warn

    warn("the sentence encoder is not installed (pip install 'catalens[text]'): [/x] kept")
    info("matched [bold]red[/bold] shirt [x]")
    err = capsys.readouterr().err
    assert "pip install 'catalens[text]'): [/x] kept" in err and "matched [bold]red[/bold] shirt [x]" in err, err


def test_version():
    """The version comes from pyproject.toml through the installed metadata: `catalens --version` and
    catalens.__version__ say the same, and not the fallback of an uninstalled tree."""
    import tomllib

    from conftest import REPO

    import catalens

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert catalens.__version__ == declared
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"catalens {declared}", result


@pytest.mark.parametrize("args,fragment", [
    (["catalog", "stats", "/no/such/folder"], "does not exist"),
    (["train", "--data", "DATA", "--model", "nonet", "--out", "OUT"], "unknown model 'nonet'"),
    (["train", "--data", "DATA", "--model", "timm:not_a_net", "--out", "OUT"], "unknown backbone 'not_a_net'"),
    (["train", "--data", "DATA", "--labels", "MAP", "--out", "OUT"], "unknown class 'Dress'"),
    (["train", "--data", "EMPTY", "--out", "OUT"], "no images found"),
    (["evaluate", "OUT", "--data", "DATA"], "no model at"),
    (["predict", "OUT", "x.jpg"], "no model at"),
    (["predict", "RUN", "missing.jpg"], "input missing.jpg does not exist"),
    (["train", "--data", "DATA", "--augment", "wild", "--out", "OUT"], "unknown augmentation preset"),
])
def test_bad_input_gives_one_line_error(tmp_path, trained_run, args, fragment):
    data = make_folder(tmp_path / "shop", per_class=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "map.yaml").write_text("clothes: [Dress, blob]\n")
    replace = {"DATA": str(data), "OUT": str(tmp_path / "run"), "EMPTY": str(tmp_path / "empty"),
               "MAP": str(tmp_path / "map.yaml"), "RUN": str(trained_run)}
    result = run_cli(*[replace.get(arg, arg) for arg in args])
    assert_one_line_error(result, fragment)


def test_train_evaluate_predict_contract_forms(tmp_path):
    data = make_folder(tmp_path / "shop", per_class=12)
    run = tmp_path / "run"
    result = run_cli("train", "--data", str(data), "--model", "cnn3", "--epochs", "1", "--limit", "24",
                     "--input-size", "32", "--out", str(run))
    assert result.returncode == 0, result.stderr
    card = json.loads((run / "model_card.json").read_text())
    assert card["data"]["train_items"] == 24
    result = run_cli("evaluate", str(run), "--data", str(data), "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # the same data the model was trained on: its seeded 80/10/10 split is reproduced and test is held out
    assert metrics["split"] == "test" and 3 <= metrics["items"] <= 6
    result = run_cli("predict", str(run), str(data / "blob"), "--top-k", "2", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 12 and all(len(line["top_k"]) == 2 for line in lines)
    # re-running from the saved config reproduces the same data selection
    result = run_cli("train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "again" / "model_card.json").read_text())
    assert again["data"]["fingerprint"] == card["data"]["fingerprint"]


def test_help_teaches():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    for option in ("--data", "--model", "--labels", "--epochs", "--limit", "--out", "--resume", "--augment"):
        assert option in result.stdout


@pytest.mark.parametrize("args, says", [
    (("predict", "run", "x", "--formt", "csv"), "No such option: --formt"),
    (("trian", "--data", "x"), "No such command 'trian'"),
    (("train", "--epochs", "many"), "--epochs"),
])
def test_usage_errors_are_one_line_with_exit_code_2(args, says):
    """A mistyped option or command: one line on stderr that points at --help, exit code 2, no traceback (typer
    0.2x raises its vendored click's exceptions, which `except click.ClickException` missed)."""
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--help" in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_help_examples_keep_their_lines():
    """click reflows a help paragraph unless it starts with \\b: each example stays on its own line."""
    result = run_cli("train", "--help")
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "catalens train --data photos/ --out runs/auto" in lines
    assert "catalens train --data fashion-mnist --model fastcnn --epochs 18 --out runs/fm" in lines


def test_every_option_is_declared_once_and_reaches_config_data_options_and_help():
    """options.py is the one schema: TrainConfig and DataOptions are built from it, and each command's --help
    lists exactly the options that name the command."""
    from dataclasses import fields

    from catalens.data import DataOptions
    from catalens.engine.config import TrainConfig
    from catalens.options import EXPORT, OPTIONS, STATS, TRAIN

    assert [f.name for f in fields(TrainConfig)] == [option.name for option in OPTIONS]
    assert {f.name for f in fields(DataOptions)} == {option.name for option in OPTIONS if option.data}
    assert TrainConfig().max_distance == DataOptions().max_distance == 6
    for command, args in ((TRAIN, ["train"]), (STATS, ["catalog", "stats"]), (EXPORT, ["catalog", "export"])):
        text = run_cli(*args, "--help").stdout
        for option in OPTIONS:
            if command != TRAIN and option.name in ("data", "out"):  # their own argument, their own --out
                continue
            flag = option.declaration.split("/")[0]
            assert (flag in text) == (command in option.commands), (command, flag)


def walk_commands(group, path=()):
    """(command path, click command) of every command of the typer app."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (click's, or the copy typer 0.2x vendors)
            yield from walk_commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_command_takes_its_options_from_the_one_schema():
    """cli.py declares no option of its own: every parameter of every command is an entry of options.SCHEMA that
    names the command (or the hidden old spelling of a renamed one), and every entry naming a command is there."""
    import typer.main

    from catalens.cli import app
    from catalens.options import SCHEMA

    click_app = typer.main.get_command(app)
    commands = dict(walk_commands(click_app))
    assert {"train", "evaluate", "predict", "sort", "serve", "audit", "match", "catalog stats", "bson generate",
            "zoomed bootstrap", "demo", "export", "shard"} <= set(commands)
    for name, command in commands.items():
        declared = {parameter.name for parameter in command.params}
        wanted = {option.name for option in SCHEMA if name in option.commands}
        aliases = {f"{option.name}__deprecated" for option in SCHEMA if name in option.deprecated}
        assert declared == wanted | aliases, (name, declared ^ (wanted | aliases))
    flags = {}
    for option in SCHEMA:  # one flag, one option: no two entries spell the same flag
        for command in option.commands:
            flag = option.spelled(command)
            assert flags.setdefault(flag, option.name) == option.name, (flag, option.name, flags[flag])


def test_a_renamed_option_still_works_and_warns(tmp_path):
    """`zoomed bootstrap --val-fraction` is `--val-share` now: the old spelling does the same and says so."""
    photos = make_folder(tmp_path / "photos", per_class=3, size=96)
    outputs = {}
    for flag in ("--val-share", "--val-fraction"):
        out = tmp_path / flag.strip("-")
        result = run_cli("zoomed", "bootstrap", "--from", str(photos), "--out", str(out), flag, "1")
        assert result.returncode == 0, result.stderr
        outputs[flag] = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.*"))
        deprecated = "--val-fraction is deprecated in `catalens zoomed bootstrap`: write --val-share"
        assert (deprecated in result.stderr) == (flag == "--val-fraction"), result.stderr
    assert outputs["--val-share"] == outputs["--val-fraction"] and outputs["--val-share"]
    assert not any(name.startswith("train/") for name in outputs["--val-share"])  # 1: every photo in val/


def test_a_renamed_required_option_takes_its_old_spelling_and_is_still_required(tmp_path):
    """`bson generate --from` is required; its old spelling `--images` still fills it (with the warning), and
    leaving both out is the usual one-line usage error."""
    categories = tmp_path / "category_names.csv"
    categories.write_text("category_id,category_level1,category_level2,category_level3\n")
    missing = run_cli("bson", "generate", str(tmp_path / "a.bson"), "--categories", str(categories))
    assert_one_line_error(missing, "Missing option '--from'")
    old = run_cli("bson", "generate", str(tmp_path / "a.bson"), "--images", str(tmp_path / "nowhere"),
                  "--categories", str(categories), "--products", "2")
    assert "--images is deprecated in `catalens bson generate`: write --from" in old.stderr, old.stderr
    assert old.stderr.strip().splitlines()[-1] == f"error: --from {tmp_path / 'nowhere'} is not a folder of photos"

