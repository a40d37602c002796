"""The versions a review or a search compares: git revisions, DVC experiments or the workspace, and their files.

A run is one version of the pipeline's results: a branch, tag or commit; an experiment by the name that
`dvc exp show` gives it (`dvc exp run` keeps each in git, under refs/exps/); or the workspace. Files are read
from git (`git show REV:PATH`) or, for the workspace, from disk: no checkout, no DVC cache, no network.
"""

import functools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from digitlab.shared.errors import UserError

import yaml

WORKSPACE = "workspace"


@dataclass(frozen=True)
class Run:
    """One version: its name as the user gave it, and its commit (None for the workspace)."""

    name: str
    commit: str | None

    @functools.cache  # noqa: B019 - the report reads each file of each run several times, and holds a few runs
    def read(self, path: str) -> str | None:
        """A file's text in this version; None where it does not exist."""
        if self.commit is None:
            return Path(path).read_text() if Path(path).exists() else None
        result = subprocess.run(["git", "show", f"{self.commit}:{path}"], capture_output=True, text=True)
        return result.stdout if result.returncode == 0 else None

    def read_json(self, path: str):
        text = self.read(path)
        return None if text is None else json.loads(text)

    @property
    def seed(self):
        params = yaml.safe_load(self.read("params.yaml") or "{}") or {}
        return params.get("seed")


def experiment_commits(name: str) -> list[str]:
    """The commits of the experiments named `name`, from any baseline (`dvc exp run -n NAME`)."""
    # An experiment's ref is refs/exps/<baseline's commit, split>/<its name>.
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/"], capture_output=True, text=True
    ).stdout.split("\n")
    return [line.split()[1] for line in refs if line and line.split()[0].rsplit("/", 1)[-1] == name]


def resolve(name: str) -> Run:
    """The run a name stands for: "workspace", a git revision, or an experiment's name."""
    if name == WORKSPACE:
        return Run(name, None)
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], capture_output=True, text=True
    )
    if result.returncode == 0:
        return Run(name, result.stdout.strip())
    commits = experiment_commits(name)
    if len(commits) == 1:
        return Run(name, commits[0])
    if len(commits) > 1:
        raise UserError(f"{len(commits)} experiments are named {name!r}; give one by its commit (`dvc exp show --sha`)")
    raise UserError(
        f"unknown git revision or experiment {name!r}; give a branch, tag, commit or an "
        "experiment named in `dvc exp show`"
    )


def check_distinct(runs: list[Run], option: str) -> None:
    """Refuse one run given twice on one side, by name or commit, or two runs of one seed there: the test
    takes a side's runs as independent trainings."""
    seen: dict[str, str] = {}
    for run in runs:
        key = run.commit or run.name
        if key in seen:
            raise UserError(f"{option} gives one run twice ({seen[key]!r} and {run.name!r}); give each seed's run once")
        seen[key] = run.name
    seeds = [run.seed for run in runs]
    for seed in {seed for seed in seeds if seed is not None and seeds.count(seed) > 1}:
        names = ", ".join(repr(run.name) for run in runs if run.seed == seed)
        raise UserError(
            f"{option} gives {seeds.count(seed)} runs of seed {seed} ({names}): the same params and "
            "seed train the same model; give runs of different seeds"
        )


def pair_by_seed(base: list[Run], head: list[Run]) -> tuple[list[tuple[Run, Run]], str]:
    """Pair the base's runs with the head's, seed by seed; and a line saying how they were paired."""
    if len(base) == len(head) == 1:
        return [(base[0], head[0])], ""
    if len(base) != len(head):
        raise UserError(
            f"{len(base)} runs on the base side and {len(head)} on the head side; give as many on each (one per seed)"
        )
    base_seeds, head_seeds = [run.seed for run in base], [run.seed for run in head]
    if len(set(base_seeds)) == len(base) and sorted(base_seeds, key=str) == sorted(head_seeds, key=str):
        by_seed = {run.seed: run for run in head}
        pairs = [(run, by_seed[run.seed]) for run in base]
        return pairs, "Runs paired by seed: " + ", ".join(
            f"{b.seed} (`{b.name}` and `{h.name}`)" for b, h in pairs
        ) + "."
    return list(zip(base, head)), (
        "The two sides' seeds differ, so their runs are paired in the order given: "
        + ", ".join(f"`{b.name}` and `{h.name}`" for b, h in zip(base, head))
        + "."
    )
