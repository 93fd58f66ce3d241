"""The layering of pipeline/: stages stand on shared modules only, and the modules Make runs at
parse time stay light. Walks the imports of the source, so the rule keeps holding."""

import ast
import sys
from pathlib import Path

from helpers import ROOT

PKG = ROOT / "pipeline"
STAGES = {
    "folds", "train", "lr_find", "infer", "mine", "pseudo", "sanity", "ensemble", "report", "bundle", "leaderboard",
    "search", "init",
}  # fmt: skip


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__") or "__init__"


def imports() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports (as dotted names under pipeline/, "stages.train")."""
    modules = {_name(p) for p in PKG.rglob("*.py")}
    graph = {}
    for path in PKG.rglob("*.py"):
        name, found = _name(path), set()
        package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pipeline")):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = (node.module or "").removeprefix("pipeline").lstrip(".")
                parts = base + (module.split(".") if module else [])
                # `from .stages import train` imports the module stages.train
                found |= {".".join(parts)} | {".".join(parts + [a.name]) for a in node.names}
            elif isinstance(node, ast.Import):  # import pipeline.stages.train
                found |= {a.name.removeprefix("pipeline.") for a in node.names if a.name.startswith("pipeline.")}
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "import_module"
                and ".stages." in ast.unparse(node.args[0])
            ):
                found |= {f"stages.{s}" for s in STAGES}  # the dispatcher's import of the stage it runs
        graph[name] = found & modules - {name}
    return graph


def test_no_stage_is_imported_but_by_the_dispatcher():
    for module, deps in imports().items():
        for dep in deps:
            if dep.startswith("stages.") and dep != "stages":
                assert module == "__main__", f"{module} imports the stage {dep}"


def test_shared_modules_form_layers_without_a_cycle():
    graph = {
        m: {d for d in deps if not d.startswith("stages")}
        for m, deps in imports().items()
        if not m.startswith("stages") and m != "__main__"
    }
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
        if m not in done:
            path.append(m)
            for d in graph.get(m, ()):
                visit(d)
            path.pop()
            done.add(m)

    for m in graph:
        visit(m)
    assert {
        "config",
        "config_files",
        "stamps",
        "make_bridge",
        "runs",
        "io",
        "data",
        "models",
        "engine",
        "folds_file",
        "upstream",
        "labels",
        "losses",
        "metrics",
        "tta",
        "blend",
        "submission",
    } <= set(graph)


def test_what_make_runs_at_parse_time_never_imports_torch():
    code = "import sys, pipeline.__main__, pipeline.make_bridge, pipeline.sweep; print('torch' in sys.modules)"
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.stdout.strip() == "False", res.stderr
