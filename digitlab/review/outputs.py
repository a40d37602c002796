"""The pipeline's files that the review reads, where dvc.yaml says they are: found by the stage and the file's name.

dvc.yaml holds each path once; a stage or file it lacks is a one-line error that names it.
"""

from functools import cache
from pathlib import Path

from digitlab.shared.errors import UserError

import yaml

DVC_YAML = Path("dvc.yaml")


@cache
def _stages() -> dict:
    try:
        return yaml.safe_load(DVC_YAML.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise UserError(
            f"cannot read the stages of {DVC_YAML} ({error}); run the review in the project's root"
        ) from None


def _named(stage: str, kind: str, name: str) -> str:
    stages = _stages()
    if stage not in stages:
        raise UserError(f"{DVC_YAML} has no stage {stage}, whose files the review reads")
    declared = [entry if isinstance(entry, str) else next(iter(entry)) for entry in stages[stage].get(kind, [])]
    for path in declared:
        if Path(path).name == name:
            return path
    raise UserError(f"{DVC_YAML}: stage {stage} has no {kind[:-1]} named {name}; the review reads it from there")


def written_by(stage: str, name: str) -> str:
    """The path of `stage`'s output named `name` in dvc.yaml: written_by("evaluate", "answers.json")."""
    return _named(stage, "outs", name)


def read_by(stage: str, name: str) -> str:
    """The path of `stage`'s dependency named `name` in dvc.yaml: read_by("evaluate", "test.npz")."""
    return _named(stage, "deps", name)
