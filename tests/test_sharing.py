"""Sharing results through a DVC remote, and the model registry, end to end on this machine.

Each test starts from a copy of the small pipeline (tests/e2e.py) as the teammate who ran it: it adds a
DVC remote to .dvc/config and commits it, as a team does, pushes the git history to a bare repository
(`origin`) and the data to the remote. A second teammate clones `origin` and pulls. The S3 remote is
moto's S3 server, started as a process on 127.0.0.1 with its credential checks on.
"""

import csv
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import free_port
from tests.e2e import environment, experiment_metrics, run, set_params, stages_run

pytestmark = pytest.mark.slow

MODEL = "data/model/model.keras"


@dataclass
class S3Server:
    endpoint: str
    credentials: dict[str, str]  # the environment variables of a user the server knows and lets use S3

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.credentials["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    """moto's S3 server on a free port of 127.0.0.1, checking every request's signature and permissions
    after the first three (which make a user, its policy and its access key), as AWS does."""
    import boto3

    port, log = free_port(), tmp_path_factory.mktemp("s3") / "moto.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < deadline, f"moto did not start:\n{log.read_text()}"
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="unchecked",
            aws_secret_access_key="unchecked",
        )
        iam.create_user(UserName="dvc")
        iam.put_user_policy(
            UserName="dvc",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        yield S3Server(
            endpoint, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(autouse=True)
def no_aws_files_of_this_machine(tmp_path, monkeypatch):
    """Credentials come from what each test gives, never from ~/.aws of whoever runs the tests, and
    botocore never asks a cloud's instance-metadata address for them."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def publish(repo: Path, origin: Path, url: str, **options: str) -> None:
    """As the first teammate: a default DVC remote in .dvc/config, committed, and the git history in a bare
    repository, `origin`, that the others clone. Options are `dvc remote modify` ones, e.g. endpointurl."""
    run(["dvc", "remote", "add", "--default", "storage", url], repo)
    for option, value in options.items():
        run(["dvc", "remote", "modify", "storage", option, value], repo)
    run(["git", "add", ".dvc/config"], repo)
    run(["git", "commit", "-qm", "DVC remote"], repo)
    run(["git", "clone", "-q", "--bare", str(repo), str(origin)], repo)
    run(["git", "remote", "add", "origin", str(origin)], repo)


def teammate_clone(origin: Path, path: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(path)], origin.parent)
    return path


def fails(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command that must fail: its exit status is not 0; return its stdout and stderr together."""
    result = subprocess.run(command, check=False, cwd=cwd, env=environment(env), capture_output=True, text=True)
    assert result.returncode != 0, f"{' '.join(command)} did not fail:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def digests(root: Path, paths) -> dict[str, str]:
    """{path relative to root: sha256} of the files among paths."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


def files_under(root: Path, folder: str) -> dict[str, str]:
    return digests(root, (root / folder).rglob("*"))


def assert_has_everything_and_repro_runs_nothing(teammate: Path, first: Path) -> None:
    assert files_under(teammate, "data") == files_under(first, "data")  # raw, prepared and the model, byte for byte
    assert (teammate / MODEL).read_bytes() == (first / MODEL).read_bytes()
    assert json.loads(run(["dvc", "status", "--json"], teammate)) == {}
    output = run(["dvc", "repro"], teammate)
    assert stages_run(output) == [] and "up to date" in output


def test_a_teammate_pulls_from_a_directory_remote_and_repro_runs_nothing(clone, tmp_path):
    publish(clone, tmp_path / "origin.git", str(tmp_path / "storage"))
    run(["dvc", "push"], clone)
    teammate = teammate_clone(tmp_path / "origin.git", tmp_path / "teammate")
    assert not (teammate / MODEL).exists() and not (teammate / "data/prepared").exists()  # git has none of it
    run(["dvc", "pull"], teammate)
    assert_has_everything_and_repro_runs_nothing(teammate, clone)


def test_a_teammate_pulls_from_an_s3_remote_and_repro_runs_nothing(clone, tmp_path, s3):
    # The bucket and the endpoint go in .dvc/config for everyone; the credentials never go in git:
    # the first teammate keeps them in .dvc/config.local (git-ignored), the second in the environment.
    publish(clone, tmp_path / "origin.git", f"s3://{s3.bucket('team-storage')}/mnist", endpointurl=s3.endpoint)
    run(["dvc", "remote", "modify", "--local", "storage", "access_key_id", s3.credentials["AWS_ACCESS_KEY_ID"]], clone)
    run(
        ["dvc", "remote", "modify", "--local", "storage", "secret_access_key", s3.credentials["AWS_SECRET_ACCESS_KEY"]],
        clone,
    )
    run(["dvc", "push"], clone)
    stored = s3.client().list_objects_v2(Bucket="team-storage", Prefix="mnist/")
    assert stored["KeyCount"] > 0

    teammate = teammate_clone(tmp_path / "origin.git", tmp_path / "teammate")
    committed = (teammate / ".dvc/config").read_text()
    assert s3.endpoint in committed and s3.credentials["AWS_SECRET_ACCESS_KEY"] not in committed
    run(["dvc", "pull"], teammate, env=s3.credentials)
    assert_has_everything_and_repro_runs_nothing(teammate, clone)


def test_an_experiment_pushed_by_one_teammate_is_pulled_listed_and_applied_by_another(experiment_clone, tmp_path):
    # The experiment "one" (`dvc exp run --temp -S train.epochs=1`), made by tests/e2e.py on a commit that
    # adds a DVC remote (a folder), as publish() does here.
    clone = experiment_clone
    baseline_model = (clone / MODEL).read_bytes()
    run(["git", "clone", "-q", "--bare", str(clone), str(tmp_path / "origin.git")], clone)
    run(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], clone)
    run(["dvc", "exp", "apply", "one"], clone)
    produced = (clone / MODEL).read_bytes()
    metrics = json.loads((clone / "reports/evaluate/metrics.json").read_text())["test"]
    assert produced != baseline_model
    # Its git ref to origin, and its data (the new model) to the DVC remote.
    run(["dvc", "exp", "push", "origin", "one"], clone)

    teammate = teammate_clone(tmp_path / "origin.git", tmp_path / "teammate")
    run(["dvc", "exp", "pull", "origin", "one"], teammate)
    listed = experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"], teammate)))
    assert listed.get("one") == metrics, listed
    run(["dvc", "exp", "apply", "one"], teammate)
    run(["dvc", "pull"], teammate)
    assert (teammate / MODEL).read_bytes() == produced
    assert "epochs: 1" in (teammate / "params.yaml").read_text()
    assert json.loads(run(["dvc", "status", "--json"], teammate)) == {}


def rebuild(repo: Path, base: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """As the pull-request workflow runs it: build the base and the workspace alike, the base in a worktree."""
    return run(
        [sys.executable, "-m", "digitlab.review.rebuild", base, "--worktree", str(tmp_path / "base")], repo, env=env
    )


def test_the_pr_workflow_pulls_both_sides_so_a_change_to_evaluate_alone_reruns_evaluate_on_both(clone, tmp_path):
    publish(clone, tmp_path / "origin.git", str(tmp_path / "storage"))
    run(["dvc", "push"], clone)
    # The runner's checkout of a pull request that changes only an evaluate param, with the secrets unset.
    runner = teammate_clone(tmp_path / "origin.git", tmp_path / "runner")
    set_params(runner / "params.yaml", {"evaluate.calibration_bins": 5})
    run(["git", "commit", "-qam", "coarser calibration bins"], runner)

    output = rebuild(runner, "origin/HEAD", tmp_path, env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    # Both pulled, and evaluate alone re-run on each side: the base's forced in its worktree, then the head's.
    assert "warning" not in output and stages_run(output) == ["evaluate", "evaluate"], output
    source = (runner / "reports/compare/source.md").read_text()
    assert source.startswith("Base: `origin/HEAD`") and "pulled from the DVC remote, then evaluate" in source
    # The base's results, re-made here, are a revision the report reads: the same model, the same answers.
    assert (
        run(["git", "log", "-1", "--format=%s", "review/base"], runner).strip() == "origin/HEAD as rebuilt for review"
    )
    run([sys.executable, "-m", "digitlab.review.report", "--rev", "review/base", "--source", source], runner)
    verdict = json.loads((runner / "reports/compare/verdict.json").read_text())
    assert {name: (m["verdict"], m["fixed"], m["broken"]) for name, m in verdict["metrics"].items()} == {
        name: ("noise", 0, 0) for name in ("test.accuracy", "test.errors", "reject.nondigits", "reject.digits")
    }
    assert source.strip() in (runner / "reports/compare/report.md").read_text()


def test_without_a_remote_both_sides_are_reproduced_here(clone, tmp_path):
    # The base is this very commit: its stages come from DVC's run cache, shared with the worktree, not rerun.
    output = rebuild(clone, "HEAD", tmp_path)
    assert "no DVC remote" in output and "Both sides reproduced from scratch (`dvc repro`) on" in output
    assert (tmp_path / "base/data/model/model.keras").read_bytes() == (clone / MODEL).read_bytes()
    assert "review/base" in run(["git", "branch", "--list", "review/base"], clone)


def test_a_remote_the_runner_cannot_read_means_both_sides_are_reproduced_here(clone, tmp_path):
    (tmp_path / "a-file").write_text("a file, not a folder")
    publish(clone, tmp_path / "origin.git", str(tmp_path / "a-file" / "storage"))
    runner = teammate_clone(tmp_path / "origin.git", tmp_path / "runner")  # its DVC cache empty: it must pull
    decided = run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path; from digitlab.review.rebuild import pulled; "
            "print('pulled' if pulled(Path('.')) else 'not pulled')",
        ],
        runner,
    )
    assert "::warning::dvc pull failed" in decided and decided.strip().endswith("not pulled"), decided


def state(repo: Path) -> dict:
    """All that a failed transfer must leave as it was: every file of the workspace and of the DVC cache,
    by content, and git's HEAD, status and tags (not .git's or .dvc/tmp's own bookkeeping files)."""
    files = digests(
        repo,
        (
            p
            for p in repo.rglob("*")
            if p.relative_to(repo).parts[:1] != (".git",) and p.relative_to(repo).parts[:2] != (".dvc", "tmp")
        ),
    )
    git = [run(["git", *command], repo) for command in (["rev-parse", "HEAD"], ["status", "--porcelain"], ["tag"])]
    return {"files": files, "git": git}


@pytest.mark.parametrize("problem", ["closed port", "wrong secret key", "not a directory"])
def test_a_remote_that_cannot_be_reached_or_refuses_the_credentials_fails_clearly_and_changes_nothing(
    clone, tmp_path, s3, problem
):
    if problem == "closed port":
        # Nothing listens there. One attempt: botocore's retries would only make the test slower.
        url, options, env = (
            "s3://team-storage/mnist",
            {"endpointurl": f"http://127.0.0.1:{free_port()}"},
            {**s3.credentials, "AWS_MAX_ATTEMPTS": "1"},
        )
        message = "Could not connect to the endpoint URL"
    elif problem == "wrong secret key":
        url, options = f"s3://{s3.bucket('refusing')}/mnist", {"endpointurl": s3.endpoint}
        env = {**s3.credentials, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        message = "Forbidden"
    else:
        (tmp_path / "a-file").write_text("a file, not a folder")
        url, options, env = str(tmp_path / "a-file" / "storage"), {}, {}
        message = "Not a directory"
    publish(clone, tmp_path / "origin.git", url, **options)
    before = state(clone)
    output = fails(["dvc", "push"], clone, env)
    assert "ERROR: " in output and message in output and "Traceback" not in output, output
    assert state(clone) == before

    teammate = teammate_clone(tmp_path / "origin.git", tmp_path / "teammate")
    before = state(teammate)
    output = fails(["dvc", "pull"], teammate, env)
    assert "ERROR: " in output and "Traceback" not in output, output
    assert state(teammate) == before  # no data/, no partial file


def test_a_registered_version_is_fetched_by_dvc_artifacts_get_and_reads_a_digit(clone, tmp_path):
    origin = tmp_path / "origin.git"
    publish(clone, origin, str(tmp_path / "storage"))
    for artifact in ("mnist-cnn", "mnist-cnn-onnx"):  # the Keras model and the ONNX file users read, together
        run(["gto", "register", artifact, "--version", "v1.0.0"], clone)
        run(["gto", "assign", artifact, "--version", "v1.0.0", "--stage", "prod"], clone)
    run(["git", "push", "-q", "origin", "--tags"], clone)
    run(["dvc", "push"], clone)
    tags = run(["git", "ls-remote", "--tags", str(origin)], tmp_path)
    assert "refs/tags/mnist-cnn@v1.0.0" in tags and "refs/tags/mnist-cnn#prod#1" in tags

    # Anywhere else: only the git repository and its DVC remote, by version and by stage.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(["dvc", "artifacts", "get", str(origin), "mnist-cnn", "--rev", "v1.0.0", "-o", "v1.keras"], elsewhere)
    run(["dvc", "artifacts", "get", str(origin), "mnist-cnn-onnx", "--rev", "v1.0.0", "-o", "v1.onnx"], elsewhere)
    run(["dvc", "artifacts", "get", str(origin), "mnist-cnn-onnx", "--stage", "prod", "-o", "prod.onnx"], elsewhere)
    assert (elsewhere / "v1.keras").read_bytes() == (clone / MODEL).read_bytes()
    onnx = (clone / MODEL).with_suffix(".onnx").read_bytes()
    assert (elsewhere / "v1.onnx").read_bytes() == onnx and (elsewhere / "prod.onnx").read_bytes() == onnx

    # A test digit that the pipeline's own sample_predict read right, as a PNG a user might have.
    with open(clone / "reports/predict/predictions.csv") as table:
        row = next(row for row in csv.DictReader(table) if row["correct"] == "1")
    with np.load(clone / "data/prepared/test.npz", allow_pickle=False) as test:
        pixels = test["images"][int(row["index"])][..., 0]
    Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(elsewhere / "digit.png")
    output = run(["mnist-predict", "--model", "v1.onnx", "digit.png"], elsewhere)
    assert output.startswith(f"digit.png: {row['true']} ("), output
