"""A stage's command line: the paths dvc.yaml's cmd gives it, in order, named as its docstring's Usage line says."""

import argparse
from pathlib import Path


def stage_paths(doc: str, names: list[str], argv: list[str] | None) -> argparse.Namespace:
    """Parse `python -m stages.NAME PATH...`: each of `names` a Path; `--help` prints the docstring's first line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name in names:
        parser.add_argument(name, type=Path)
    return parser.parse_args(argv)
