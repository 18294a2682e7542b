"""The package's imports flow one way: every module belongs to a stage of the data flow and imports only its own
stage and earlier ones (function-level imports included); there are no cycles; the command modules (apps) do
not import each other."""

from __future__ import annotations

import ast
import functools
import time
from pathlib import Path

import catalens

PACKAGE = Path(catalens.__file__).parent

# Stages, earliest first: one package each (catalens/<stage>/), the shared core modules first and cli.py last.
# A module's stage is that of its longest matching prefix.
STAGES = [
    ("core", ["catalens", "errors", "progress", "cache", "checksums", "extras", "files", "metrics", "options",
              "plots"]),
    ("data", ["data"]),
    ("loading", ["loading"]),
    ("models", ["models"]),
    ("rundir", ["rundir"]),
    ("engine", ["engine"]),
    ("inference", ["inference"]),
    ("report", ["report"]),
    ("support", ["support"]),
    ("apps", ["apps"]),
    ("cli", ["cli", "__main__"]),
]
APPS = sorted(f"apps.{path.stem}" for path in (PACKAGE / "apps").iterdir()
              if path.name != "__init__.py" and (path.suffix == ".py" or (path / "__init__.py").is_file()))


@functools.cache
def parsed(path: Path) -> ast.Module:
    """Each file parsed once per run, and again when CPython 3.11 raises "AST constructor recursion depth
    mismatch": its AST builder keeps its depth count in state that every thread shares (python/cpython#106905),
    so another thread of the test process parsing at the same moment (3.11 parses source lines to format a
    traceback) breaks the count of this parse. It has failed a clean-clone run once; a retry parses cleanly."""
    source = path.read_text()
    for attempt in range(5):
        try:
            return ast.parse(source)
        except SystemError:
            if attempt == 4:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


@functools.cache
def lazy_names() -> dict[str, str]:
    """catalens/__init__.py's `_LAZY`: public name -> the module (catalens.X) it is imported from on first use."""
    for node in parsed(PACKAGE / "__init__.py").body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "_LAZY" for target in node.targets):
            return {name: f"catalens.{module}" for name, module in ast.literal_eval(node.value).items()}
    raise AssertionError("catalens/__init__.py has no _LAZY table")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """catalens modules imported anywhere in the file (module level and inside functions)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if target == "catalens" and alias.name in lazy_names():  # `from catalens import train`: the
                    found.add(lazy_names()[alias.name])  # module that defines it, imported on first use
                else:
                    found.add(candidate if is_module(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {target for target in found if target.split(".")[0] == "catalens" and target != name}


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def stage_of(module: str) -> int:
    short = module.removeprefix("catalens.") if module != "catalens" else "catalens"
    best = None
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if short == prefix or short.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} has no stage: add it to STAGES in {__file__}"
    return best[0]


def test_every_module_has_a_stage_and_imports_only_earlier_stages():
    """Also the layout: every module but the core ones and cli.py lives in its stage's package."""
    flat = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert flat == ["__init__", "__main__", "cache", "checksums", "cli", "errors", "extras", "files", "metrics",
                    "options", "plots", "progress"], flat
    edges = graph()
    wrong = [f"{module} ({STAGES[stage_of(module)][0]}) imports {target} ({STAGES[stage_of(target)][0]})"
             for module, targets in edges.items() for target in targets if stage_of(target) > stage_of(module)]
    assert not wrong, "imports against the data flow:\n" + "\n".join(sorted(wrong))


def test_the_public_names_are_imported_by_string_from_modules_that_define_them():
    """`catalens.train` etc. are imported by string (_LAZY), which the walk above cannot see: each must name a
    module that defines it, and no module of the package may import the package's public names from the root (the
    root would then import it back on first use)."""
    for name, module in lazy_names().items():
        path = PACKAGE.parent / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert path.is_file(), f"_LAZY[{name!r}] names {module}, which does not exist"
        tree = parsed(path)
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))} | \
                  {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                   for alias in node.names}
        assert name in defined, f"_LAZY[{name!r}] names {module}, which does not define {name}"
    through_root = [f"{module_name(path)} imports {alias.name} from the root"
                    for path in PACKAGE.rglob("*.py") for node in ast.walk(parsed(path))
                    if isinstance(node, ast.ImportFrom) and node.module == "catalens" and not node.level
                    for alias in node.names if alias.name in lazy_names()]
    assert not through_root, "\n".join(through_root)


def test_apps_are_found_on_disk():
    assert {"apps.sort", "apps.serve", "apps.audit", "apps.match", "apps.demo", "apps.zoomed"} <= set(APPS), APPS


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target in edges and state.get(target) is None and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if state.get(module) is None:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_commands_do_not_import_each_other():
    edges = graph()
    apps = {f"catalens.{name}" for name in APPS}

    def app_of(module: str) -> str | None:
        return next((app for app in apps if module == app or module.startswith(app + ".")), None)

    crossing = [f"{module} imports {target}" for module, targets in edges.items() for target in targets
                if app_of(module) and app_of(target) and app_of(module) != app_of(target)]
    assert not crossing, "\n".join(crossing)


def test_the_walk_sees_function_level_imports(tmp_path):
    """The checker itself: an import inside a function body counts (the old data <-> sources cycle hid there)."""
    source = tmp_path / "bson_dump.py"
    source.write_text("def f():\n    from ...engine import train\n")
    assert imports_of(source, "catalens.data.sources.bson_dump") == {"catalens.engine.train"}


def test_only_the_layout_names_the_run_directorys_files():
    """rundir/layout.py names every file of a run directory; no other module spells one of those names."""
    from catalens.rundir import layout

    spelled = [f"{module_name(path)} spells {node.value!r}" for path in PACKAGE.rglob("*.py")
               if path != PACKAGE / "rundir" / "layout.py" for node in ast.walk(parsed(path))
               if isinstance(node, ast.Constant) and node.value in layout.FILES
               and (path.name, node.value) != ("files.py", layout.PROBLEMS_FILE)]  # shared with other outputs
    assert not spelled, "\n".join(spelled)



def test_no_function_is_longer_than_80_lines():
    long = [f"{module_name(path)}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(parsed(path))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, "split these:\n" + "\n".join(long)


def test_commands_start_without_scikit_learn_or_pyplot():
    """train, evaluate, predict and sort import scikit-learn and matplotlib's pyplot when they use them, not when
    they start (together about a second of every command's start on 2 cores)."""
    import subprocess
    import sys

    code = ("import sys, catalens.cli, catalens.engine.train, catalens.report.evaluate, catalens.inference.predict, "
            "catalens.apps.sort; "
            "print(sorted(m for m in ('sklearn', 'matplotlib.pyplot', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
