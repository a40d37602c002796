"""One trial: `dvc exp run --temp` with the trial's values, its log kept, its metrics read back from git.

The experiment is the record: its params and metrics are in its git ref (refs/exps/...), so that `dvc exp show`
lists it and `dvc exp apply NAME` takes it into the workspace. The search keeps no second copy of them.
"""

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from digitlab.shared.errors import UserError

from digitlab.comparison.revisions import Run, experiment_commits
from digitlab.search.space import OBJECTIVE_FILES

STOP_WAIT_S = 60  # how long an interrupted `dvc exp run` may take to clean up before it is killed


@dataclass(frozen=True)
class Outcome:
    """What a trial's `dvc exp run` left: its metrics, or why it failed, and its log."""

    name: str
    log: Path
    seconds: float
    metrics: dict[str, dict] | None  # file -> its JSON; None when the run failed
    error: str = ""  # the last error line of a failed run


def experiment_commit(name: str) -> str | None:
    """The commit of the experiment named `name` (from any baseline), or None."""
    commits = experiment_commits(name)
    return commits[-1] if commits else None


def read_metrics(commit: str, files: list[str]) -> dict[str, dict]:
    """The JSON files of an experiment's commit, as `git show` gives them: training's, never the test split's."""
    if not set(files) <= set(OBJECTIVE_FILES):
        raise UserError(
            f"the search reads {', '.join(OBJECTIVE_FILES)} only, not {', '.join(files)}: the test split never chooses"
        )
    experiment = Run(commit[:7], commit)
    found = {file: experiment.read_json(file) for file in files}
    for file, data in found.items():
        if data is None:
            raise UserError(f"the experiment {commit[:7]} has no {file}: is it written by a stage of dvc.yaml?")
    return found


def last_error(log: Path) -> str:
    """The line of a log that says what went wrong: a stage's own `error: ...` (the project's stages say what to
    do there), else DVC's ERROR or a Python exception's line, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for wanted in (lambda line: line.startswith("error:"), lambda line: line.startswith("ERROR") or "Error:" in line):
        for line in reversed(lines):
            if wanted(line):
                return line
    return lines[-1] if lines else "no output"


def describe(values: dict, separator: str = " ") -> str:
    """A trial's values as its lines show them: train.learning_rate=0.002333 model.dense_units=128."""
    return separator.join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in values.items()
    )


def command(name: str, overrides: dict[str, object]) -> list[str]:
    """The `dvc exp run` of a trial: in a temporary copy of the workspace, so that the workspace is untouched."""
    sets = [argument for key, value in overrides.items() for argument in ("-S", f"{key}={json.dumps(value)}")]
    return ["dvc", "exp", "run", "--temp", "-n", name, *sets]


def run_trial(name: str, overrides: dict[str, object], files: list[str], logs: Path) -> Outcome:
    """Run one trial to its end. Ctrl-C (KeyboardInterrupt) stops the run, waits for DVC to clean up and
    raises on, for the study to mark the trial."""
    if experiment_commit(name):
        raise UserError(
            f"an experiment named {name} exists already (an earlier study of that name?): remove "
            f"it with `dvc exp remove {name}` or give another --study"
        )
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    started = time.perf_counter()
    with log.open("w") as output:
        output.write("$ " + " ".join(command(name, overrides)) + "\n")
        output.flush()
        process = subprocess.Popen(
            command(name, overrides), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )  # Ctrl-C reaches the search, which stops it
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            # As a terminal's Ctrl-C would: to DVC and the stage it runs (their own process group).
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
    seconds = time.perf_counter() - started
    commit = experiment_commit(name) if returncode == 0 else None
    if commit is None:
        return Outcome(name, log, seconds, None, last_error(log) if returncode else "no experiment was saved")
    return Outcome(name, log, seconds, read_metrics(commit, files))


def metric(metrics: dict[str, dict], file: str, dotted: str) -> float:
    """One metric of a trial, e.g. eval.accuracy in reports/train/metrics.json."""
    value = metrics[file]
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise UserError(f"{file} has no {dotted}")
        value = value[key]
    return float(value)


def push_experiment(remote: str, name: str) -> None:
    """`dvc exp push`: the experiment's git ref to `remote` and its outputs to the DVC remote, so that any clone
    gets it with `dvc exp pull`. A failed push is said, not fatal: the experiment stays here."""
    pushed = subprocess.run(["dvc", "exp", "push", remote, name], capture_output=True, text=True)
    if pushed.returncode != 0:
        message = (pushed.stderr.strip().splitlines() or ["no message"])[-1]
        print(
            f"search: could not push {name} to {remote}: {message}; push it later with `dvc exp push {remote} {name}`",
            flush=True,
        )
