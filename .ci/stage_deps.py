"""dvc.yaml's code deps, computed from the imports: `python .ci/stage_deps.py` rewrites them, `--check` (CI) fails
where dvc.yaml disagrees.

A stage's code is its module (`python -m stages.NAME`), every module of the project it imports, directly or through
another, imports inside functions included, and the `__init__.py` of each of their packages. grimp, the graph behind
import-linter, finds them. dvc.yaml lists them file by file after the stage's data deps, so that an edit re-runs
exactly the stages that run the edited file, wherever that file lives.
"""

import argparse
import re
import sys
from io import StringIO
from pathlib import Path

import grimp
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stages", "digitlab")


def module_file(module: str, root: Path = ROOT) -> str | None:
    """stages.train -> stages/train.py, digitlab.shared -> digitlab/shared/__init__.py; None for a namespace package."""
    path = module.replace(".", "/")
    for candidate in (f"{path}.py", f"{path}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def code_of(module: str, graph: grimp.ImportGraph, root: Path = ROOT) -> list[str]:
    """The files `python -m MODULE` runs from the project: the module, what it imports, and their packages."""
    modules = {module} | {m for m in graph.find_upstream_modules(module) if m.split(".")[0] in PACKAGES}
    with_packages = {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)}
    files = filter(None, (module_file(m, root) for m in with_packages))
    return sorted(files, key=lambda file: (not file.startswith("stages/"), file))  # the stage's own first


def stage_module(command: str) -> str:
    found = re.fullmatch(r"python -m (stages\.\w+)( .*)?", command)
    if not found:
        raise SystemExit(f"error: a stage's cmd must be `python -m stages.NAME ...`, got {command!r}")
    return found.group(1)


def import_graph(root: Path = ROOT) -> grimp.ImportGraph:
    """The imports of the project at `root`, its packages found there first."""
    sys.path.insert(0, str(root))
    try:
        return grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(root))


def computed(pipeline: dict, root: Path = ROOT) -> dict[str, list[str]]:
    """Each stage's deps as they should be: its data deps as dvc.yaml has them, then its code, file by file."""
    graph = import_graph(root)
    return {
        name: [d for d in stage["deps"] if str(d).split("/")[0] not in PACKAGES]
        + code_of(stage_module(stage["cmd"]), graph, root)
        for name, stage in pipeline["stages"].items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if dvc.yaml's code deps differ; change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this checkout)")
    args = parser.parse_args(argv)

    yaml = YAML()  # round trip: dvc.yaml's comments and layout stay as they are
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = args.root / "dvc.yaml"
    pipeline = yaml.load(path.read_text())
    wanted = computed(pipeline, args.root)
    differ = [name for name, deps in wanted.items() if list(pipeline["stages"][name]["deps"]) != deps]
    if args.check:
        if differ:
            print(
                f"error: dvc.yaml's code deps of {', '.join(differ)} differ from the imports; run "
                "`python .ci/stage_deps.py` and commit dvc.yaml (and dvc.lock after `dvc repro`)",
                file=sys.stderr,
            )
            sys.exit(1)
        print("dvc.yaml's code deps follow the imports")
        return
    for name in differ:
        deps = pipeline["stages"][name]["deps"]
        deps.clear()
        deps.extend(wanted[name])
    text = StringIO()
    yaml.dump(pipeline, text)
    path.write_text(text.getvalue())
    print(f"dvc.yaml: code deps rewritten for {', '.join(differ)}" if differ else "dvc.yaml: code deps unchanged")


if __name__ == "__main__":
    main()
