"""The search, `python -m digitlab.search`: Optuna proposes, real `dvc exp run` runs and records, in a small git + DVC
repository whose one stage stands in for training (it scores the params in a moment), so that a study of
several trials, a failure and Ctrl-C take seconds. The search code cannot tell the stand-in from the pipeline:
it runs `dvc exp run --temp` and reads reports/train/*.json back from each experiment's git ref.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import PROJECT_ROOT, default_sigint, free_port

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
}

# The stand-in for training: validation accuracy peaks at a learning rate of 0.003 (STAND_IN_PEAK) and a
# dropout of 0.3, give or take a seed's luck of 0.0003; the time falls with the batch size. dense_units 13
# fails as a stage fails; SLEEP_FILE makes it wait (Ctrl-C).
STAND_IN = """
import json, math, os, pathlib, time, yaml
params = yaml.safe_load(open("params.yaml"))
if os.environ.get("STAND_IN_STARTED"):
    pathlib.Path(os.environ["STAND_IN_STARTED"]).write_text("started")
    time.sleep(float(os.environ.get("STAND_IN_SLEEP", "0")))
if params["model"]["dense_units"] == 13:
    raise SystemExit("error: model.dense_units 13 is not a width this stand-in can train")
peak = float(os.environ.get("STAND_IN_PEAK", "0.003"))
train, model = params["train"], params["model"]
accuracy = 0.99 - 0.01 * math.log10(train["learning_rate"] / peak) ** 2 - 0.01 * abs(model["dropout"] - 0.3)
accuracy += ((params["seed"] * 37) % 7 - 3) * 0.0001  # a seed's luck
pathlib.Path("reports/train").mkdir(parents=True, exist_ok=True)
pathlib.Path("reports/train/metrics.json").write_text(json.dumps({"eval": {"accuracy": round(accuracy, 6)}}))
speed = {"train": {"seconds": 6400 / train["batch_size"]}}
pathlib.Path("reports/train/speed.json").write_text(json.dumps(speed))
pathlib.Path("reports/evaluate").mkdir(parents=True, exist_ok=True)
pathlib.Path("reports/evaluate/metrics.json").write_text(json.dumps({"test": {"accuracy": 0.5}}))
"""

DVC_YAML = {
    "stages": {
        "train": {
            "cmd": "python stand_in.py",
            "deps": ["stand_in.py"],
            "params": ["seed", "train", "model", "data"],
            "metrics": [
                {"reports/train/metrics.json": {"cache": False}},
                {"reports/train/speed.json": {"cache": False}},
                {"reports/evaluate/metrics.json": {"cache": False}},
            ],
        }
    }
}

SEARCH = {
    "study": "quick",
    "trials": 3,
    "seed": 42,
    "objectives": [{"metric": "eval.accuracy", "file": "reports/train/metrics.json", "direction": "maximize"}],
    "space": {
        "train.learning_rate": {"low": 0.0005, "high": 0.01, "log": True},
        "model.dropout": {"low": 0.1, "high": 0.5},
        "model.dense_units": {"choices": [64, 128]},
    },
    "fixed": {"train.epochs": 2, "data.max_train_samples": 5000},
}


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=kwargs.pop("env", ENV), capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repository with the project's params.yaml and a stand-in training stage, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    (repo / "stand_in.py").write_text(STAND_IN)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / ".gitignore").write_text((PROJECT_ROOT / ".gitignore").read_text())
    write_search(repo, SEARCH)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "test"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "stand-in pipeline"], repo)
    return repo


def write_search(repo: Path, search: dict) -> None:
    (repo / "search.yaml").write_text(yaml.safe_dump(search, sort_keys=False))


def search(repo: Path, *options: str, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "digitlab.search", *options], cwd=repo, env=env or ENV, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def experiments(repo: Path) -> dict[str, dict]:
    """Each experiment's name and params, as `dvc exp show --json` lists them."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            revision = experiment["revs"][0]
            found[revision["name"]] = revision["data"]["params"]["params.yaml"]["data"]
    return found


def test_a_study_runs_each_trial_as_an_experiment_and_sums_it_up(repo):
    result = search(repo)

    found = experiments(repo)
    assert set(found) == {"quick-0", "quick-1", "quick-2"}
    for params in found.values():  # each proposed value, the fixed ones and the seed, set with -S
        assert 0.0005 <= params["train"]["learning_rate"] <= 0.01 and params["model"]["dense_units"] in (64, 128)
        assert (params["train"]["epochs"], params["data"]["max_train_samples"], params["seed"]) == (2, 5000, 42)
    assert len({p["train"]["learning_rate"] for p in found.values()}) == 3  # proposed, not repeated
    lines = result.stdout.splitlines()
    assert sum(line.startswith("search: trial") and " runs with " in line for line in lines) == 3
    assert any("eval.accuracy 0.9" in line and "best eval.accuracy" in line and "min left" in line for line in lines)
    # The workspace is as it was: every trial ran in a temporary copy.
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout == ""
    assert yaml.safe_load((repo / "params.yaml").read_text()) == yaml.safe_load(
        (PROJECT_ROOT / "params.yaml").read_text()
    )

    # One command shows them in 120 columns: names, the params that differ, the headline metrics, whole.
    shown = run([sys.executable, "-m", "digitlab.search.table"], repo, env={**ENV, "COLUMNS": "120"}).stdout
    lines = shown.splitlines()
    # The trials' values and fixed overrides differ from the baseline's; the seed and the rest do not.
    assert set(lines[0].split()) == {
        "experiment",
        "epochs",
        "learning_rate",
        "dropout",
        "dense_units",
        "max_train_samples",
        "eval.accuracy",
        "test.accuracy",
        "test.errors",
    }
    assert all(len(line) <= 120 for line in lines)
    assert {line.split()[0] for line in lines[1:]} >= {"main", "quick-0", "quick-1", "quick-2"}
    summary = (repo / "reports/search/quick.md").read_text()
    assert "3 trials complete of 3" in summary and "`quick-2`" in summary and "## Importances" in summary
    assert (repo / "reports/search/quick.png").read_bytes().startswith(b"\x89PNG")
    # Run again: the study is complete and nothing runs twice.
    again = search(repo)
    assert "has its 3 complete trials already" in again.stdout and set(experiments(repo)) == set(found)
    # More trials resume the same study, numbered on.
    search(repo, "--trials", "4")
    assert set(experiments(repo)) == {"quick-0", "quick-1", "quick-2", "quick-3"}


def test_a_failing_trial_is_recorded_with_its_log_and_the_search_goes_on(repo):
    write_search(
        repo,
        {
            **SEARCH,
            "trials": 2,
            "space": {"model.dense_units": {"choices": [13, 64]}, "model.dropout": {"low": 0.1, "high": 0.5}},
        },
    )
    result = search(repo)

    failed = [line for line in result.stdout.splitlines() if " failed after " in line]
    assert failed, result.stdout
    assert "error: model.dense_units 13 is not a width this stand-in can train" in failed[0]
    log = Path(repo, failed[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and "dense_units 13" in log.read_text() and log.parts[-4:-2] == (".search", "quick")
    summary = (repo / "reports/search/quick.md").read_text()
    assert "| fail |" in summary and ".search/quick/logs/" in summary and "2 trials complete of 2" in summary
    assert all(params["model"]["dense_units"] == 64 for params in experiments(repo).values())


def test_ctrl_c_stops_the_running_experiment_and_the_same_command_resumes(repo, tmp_path):
    started = tmp_path / "started"
    env = {**ENV, "STAND_IN_STARTED": str(started), "STAND_IN_SLEEP": "600"}
    process = subprocess.Popen(
        [sys.executable, "-m", "digitlab.search", "--trials", "2"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline and process.poll() is None, "the first trial never started"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stdout + stderr
    assert "search: interrupted; trial 0 (quick-0) was stopped and marked failed" in stderr
    stray = subprocess.run(["pgrep", "-f", "stand_in.py"], capture_output=True, text=True).stdout
    assert stray == "", "the interrupted experiment is still running"
    assert "quick-0" not in experiments(repo)

    resumed = search(repo, "--trials", "2")
    assert "resuming the study quick: 0 complete, 0 failed, 1 interrupted" in resumed.stdout
    found = experiments(repo)
    assert set(found) == {"quick-1", "quick-2"}  # trial 1 runs trial 0's values again
    summary = (repo / "reports/search/quick.md").read_text()
    assert "interrupted (Ctrl-C)" in summary and "trial 0 again" in summary


REFUSED = [
    (
        {"objectives": [{"metric": "test.accuracy", "file": "reports/evaluate/metrics.json", "direction": "maximize"}]},
        "the test split never chooses",
    ),
    ({"space": {"train.no_such_knob": {"low": 1, "high": 2}}}, "train.no_such_knob"),
    ({"space": {"model.dropout": {"low": 0.1, "high": 1.5}}}, "model.dropout = 1.5 makes an invalid"),
    ({"space": {"train.learning_rate": {"low": 0, "high": 0.1, "log": True}}}, "a log range needs low above 0"),
]


def test_a_search_that_could_not_run_or_would_read_the_test_split_is_refused_before_any_trial(repo):
    from digitlab.shared.errors import UserError

    from digitlab.search.space import load_search

    for change, message in REFUSED:
        write_search(repo, {**SEARCH, **change})
        with pytest.raises(UserError, match="invalid .*search.yaml") as refused:
            load_search(repo / "search.yaml", repo / "params.yaml")
        assert message in str(refused.value)
    # As the command says it: one line, exit 1, and no experiment run.
    result = search(repo, check=False)
    assert result.returncode == 1 and result.stderr.startswith("error: invalid search.yaml")
    assert experiments(repo) == {}


def test_the_search_reads_no_file_of_the_test_split(repo, monkeypatch):
    from digitlab.shared.errors import UserError

    from digitlab.search.trials import read_metrics

    commit = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    monkeypatch.chdir(repo)
    assert read_metrics(commit, ["reports/train/metrics.json"])["reports/train/metrics.json"]["eval"]
    with pytest.raises(UserError, match="the test split never chooses"):
        read_metrics(commit, ["reports/evaluate/metrics.json"])


# --- Many machines: one study in a real PostgreSQL server --------------------------------------------------------


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of Debian's package on a loopback port, in a folder of its own, and a database for
    Optuna: its URL. initdb refuses root, so under root (as CI runs) the server runs as the postgres user."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not bins:
        pytest.skip("no PostgreSQL server: `apt-get install postgresql` (.ci/run does)")
    bin_dir = bins[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="search-postgres-"))
    folder.chmod(0o755)
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_server:
        shutil.chown(folder, "postgres")
    port = free_port()
    data, address = folder / "data", ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    run([*as_server, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], folder)
    run(
        [
            *as_server,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-o",
            f"-k {folder} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        folder,
    )
    try:
        run([*as_server, str(bin_dir / "createdb"), *address, "optuna"], folder)
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*as_server, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


def clone_of(origin: Path, folder: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(folder)], origin.parent)
    run(["git", "config", "user.email", "test@example.com"], folder)
    run(["git", "config", "user.name", "test"], folder)
    return folder


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # Optuna 5's retry, "experimental"
def test_two_workers_share_one_study_in_postgresql_and_a_dead_workers_trial_goes_to_the_other(repo, postgres, tmp_path):
    # The project as a team shares it: a bare git remote and a DVC remote (a folder), and a clone per machine.
    run(["dvc", "remote", "add", "-d", "store", str(tmp_path / "store")], repo)
    run(["git", "commit", "-qam", "a DVC remote"], repo)
    origin = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(repo), str(origin)], tmp_path)
    first, second = clone_of(origin, tmp_path / "first"), clone_of(origin, tmp_path / "second")
    options = ["--storage", postgres, "--study", "shared", "--push", "origin", "--heartbeat", "1"]

    # Two machines at once: each runs the trials it is given, none twice.
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "digitlab.search", *options, "--trials", "4"],
            cwd=clone,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for clone in (first, second)
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    ran = [[line.split()[2] for line in out.splitlines() if " runs with " in line] for out, _ in outputs]
    assert all(ran) and not set(ran[0]) & set(ran[1]), ran  # both worked, on different trials
    assert len(ran[0] + ran[1]) == 4  # and stopped at four: a trial running elsewhere counts
    proposed = [
        line.split(" runs with ")[1] for out, _ in outputs for line in out.splitlines() if " runs with " in line
    ]
    assert len(set(proposed)) == 4, proposed  # each machine's sampler draws its own values

    # The first machine dies in the middle of a trial (the search and the experiment it runs, killed).
    started = tmp_path / "started"
    dying = subprocess.Popen(
        [sys.executable, "-m", "digitlab.search", *options, "--trials", "6"],
        cwd=first,
        env={**ENV, "STAND_IN_STARTED": str(started), "STAND_IN_SLEEP": "600"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline and dying.poll() is None, "the dying worker's trial never started"
        time.sleep(0.2)
    for process in [*psutil.Process(dying.pid).children(recursive=True), psutil.Process(dying.pid)]:
        process.kill()
    dying.wait()
    time.sleep(4)  # three heartbeats of silence: the trial is stale
    # The other machine takes the dead one's trial (its values, under a new number) and ends the study.
    search(second, *options, "--trials", "6")

    import optuna

    study = optuna.load_study(study_name="shared", storage=postgres)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    dead = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(complete) == 6 and len(dead) == 1, [(t.number, t.state) for t in trials]
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    assert [t.params for t in complete if retried(t) == dead[0].number] == [dead[0].params]
    # A third clone gets every trial from the shared remotes; none ran twice to completion.
    third = clone_of(origin, tmp_path / "third")
    run(["dvc", "exp", "pull", "--all-commits", "origin"], third)
    found = experiments(third)
    assert set(found) == {t.user_attrs["experiment"] for t in complete}, found


def test_confirm_reruns_the_best_trial_and_the_default_with_the_same_seeds_and_calls_it_beyond_noise(repo):
    # The stand-in's best learning rate is 0.01 here; params.yaml's 0.003 costs 0.0027 of accuracy, nine
    # times a seed's luck: the confirmed trial is better.
    write_search(
        repo,
        {
            **SEARCH,
            "trials": 1,
            "space": {"train.learning_rate": {"low": 0.009, "high": 0.01}},
            "confirm": {"best": 1, "seeds": [42, 43, 44]},
        },
    )
    result = search(repo, "--confirm", env={**ENV, "STAND_IN_PEAK": "0.01"})

    found = experiments(repo)
    reruns = {name: params for name, params in found.items() if name != "quick-0"}
    assert sorted(reruns) == sorted(
        [f"quick-default-s{s}" for s in (42, 43, 44)] + [f"quick-confirm-0-s{s}" for s in (42, 43, 44)]
    )
    for name, params in reruns.items():  # the same seeds on both sides; the default is params.yaml's own value
        assert params["seed"] == int(name[-2:]) and params["train"]["epochs"] == 2
        if "default" in name:
            assert params["train"]["learning_rate"] == 0.003
    summary = (repo / "reports/search/quick.md").read_text()
    verdict = summary.split("## Verdict\n\n", 1)[1]
    assert verdict.startswith("trial ") and "beats the default beyond seed noise on validation" in verdict
    assert "**better**" in verdict and "beats the default" in result.stdout


def test_the_verdict_says_plainly_when_no_variant_beats_the_default():
    from digitlab.search.confirm import Candidate, verdict
    from digitlab.search.space import Search

    search = Search.model_validate({**SEARCH, "confirm": {"best": 2, "seeds": [42, 43, 44]}})
    default = Candidate("default", {}, [0.981, 0.983, 0.982])
    chosen = [
        (3, Candidate("quick-confirm-3", {"train.learning_rate": 0.004}, [0.982, 0.984, 0.980])),
        (5, Candidate("quick-confirm-5", {"train.learning_rate": 0.001}, [0.975, 0.976, 0.974])),
    ]
    text = verdict(default, chosen, search)
    assert text.startswith("No variant beats the default beyond seed noise on validation")
    rows = [line for line in text.splitlines() if line.startswith("| trial")]
    assert rows[0].endswith("**noise** |") and rows[1].endswith("**worse** |")


def test_the_table_keeps_names_params_and_metrics_whole_within_the_width():
    from digitlab.search.table import table

    params = [
        "train.epochs",
        "train.batch_size",
        "train.learning_rate",
        "model.dense_units",
        "model.dropout",
        "data.max_train_samples",
        "seed",
        "train.augment.shear",
        "model.shear",
    ]
    base = {
        "typ": "baseline",
        "Experiment": None,
        "rev": "main",
        "train.epochs": 12,
        "train.batch_size": 64,
        "train.learning_rate": 0.003,
        "model.dense_units": 256,
        "model.dropout": 0.3,
        "data.max_train_samples": None,
        "seed": 42,
        "train.augment.shear": 0,
        "model.shear": 1,
        "eval.accuracy": 0.995166,
        "test.accuracy": 0.9957,
        "test.errors": 43.0,
    }
    rows = [base] + [
        {
            **base,
            "typ": "branch_commit",
            "Experiment": f"a-long-experiment-name-{n}",
            "train.epochs": 2,
            "train.batch_size": 32 * n,
            "train.learning_rate": 0.0012345678 * n,
            "model.dense_units": 64,
            "model.dropout": 0.1 * n,
            "data.max_train_samples": 5000,
            "train.augment.shear": 0.1,
            "model.shear": 1 if n < 3 else 2,
            "test.errors": 263.0,
        }
        for n in (1, 2, 3)
    ]
    shown = table(rows, params, ["eval.accuracy", "test.accuracy", "test.errors"], 120).splitlines()
    assert all(len(line) <= 120 for line in shown), shown
    assert shown[0].split() == ["experiment", "changed", "eval.accuracy", "test.accuracy", "test.errors"]
    first = [line for line in shown if line.startswith("a-long-experiment-name-2")][0]
    assert first.split()[-3:] == ["0.9952", "0.9957", "263"]  # metrics whole, on the name's line
    text = " ".join(shown)
    # Only what differs (not the seed), each by its short name unless two share it (the two shears).
    assert "learning_rate=0.002469" in text and "augment.shear=0.1" in text and "model.shear=2" in text
    assert "max_train_samples=5000" in text and "seed=" not in text
    # Wide enough, a column per param.
    wide = table(rows, params, ["test.accuracy"], 200).splitlines()
    assert wide[0].split() == [
        "experiment",
        "epochs",
        "batch_size",
        "learning_rate",
        "dense_units",
        "dropout",
        "max_train_samples",
        "augment.shear",
        "model.shear",
        "test.accuracy",
    ]


@pytest.mark.parametrize("name", ["search.yaml", "search-full.yaml"])
def test_the_committed_studies_are_valid_and_choose_on_validation_only(name):
    from digitlab.search.space import load_search

    search = load_search(PROJECT_ROOT / name, PROJECT_ROOT / "params.yaml")
    assert {objective.file for objective in search.objectives} <= {
        "reports/train/metrics.json",
        "reports/train/speed.json",
    }
    if name == "search-full.yaml":  # all the training images, at least 12 trials, re-run with 3 seeds
        assert "data.max_train_samples" not in search.fixed and search.trials >= 12
        assert len(search.confirm.seeds) == 3
