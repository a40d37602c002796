"""Like with like: build a pull request's base the way its head is built, on this machine, before comparing.

A model trained on another kind of CPU differs in a few borderline images, so this command builds the base (a
git revision, in a worktree sharing this repository's DVC cache) and the head (the workspace) alike: with a DVC
remote, both sides pull and re-run, base and head, the stages the head must re-run; without one, both sides are
reproduced with `dvc repro`. The base's results are committed on the local branch review/base, and where each
side's numbers came from is written to SOURCE_FILE (docs/review.md):

    python -m digitlab.review.rebuild origin/main
    python -m digitlab.review.report --rev review/base --source "$(cat reports/compare/source.md)"

Usage: python -m digitlab.review.rebuild BASE_REV [--worktree ../review-base] [--source-file reports/compare/source.md]
"""

import argparse
import json
import platform
import subprocess
from pathlib import Path

from digitlab.shared.errors import UserError, run_command

import yaml

from digitlab.files.atomic import write_text

BRANCH = "review/base"


def run(args: list[str], cwd: Path, quiet: bool = False) -> str:
    """Run a command in `cwd`, its output shown as it goes (unless quiet); fail with a one-line error."""
    print(f"rebuild: ({cwd.name}) {' '.join(args)}", flush=True)
    result = subprocess.run(args, cwd=cwd, text=True, capture_output=quiet)
    if result.returncode != 0:
        last = ((result.stderr or "").strip().splitlines() or ["see the output above"])[-1]
        raise UserError(f"`{' '.join(args)}` failed in {cwd}: {last}")
    return result.stdout or ""


def pulled(root: Path) -> bool:
    """Whether a DVC remote is configured and `dvc pull` from it succeeded in `root`."""
    if not subprocess.run(["dvc", "remote", "list"], cwd=root, capture_output=True, text=True).stdout.strip():
        print(f"rebuild: no DVC remote in {root.name}/.dvc/config")
        return False
    print(f"rebuild: ({root.name}) dvc pull --allow-missing", flush=True)
    if subprocess.run(["dvc", "pull", "--allow-missing"], cwd=root).returncode != 0:
        print("::warning::dvc pull failed (are the remote's credentials set?): both sides are reproduced here")
        return False
    return True


def stale_stages(root: Path) -> list[str]:
    """The stages `dvc repro` would run in `root`, by name."""
    return list(json.loads(run(["dvc", "status", "--json"], root, quiet=True) or "{}"))


def machine() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    return f"{platform.node()}, {cpu or platform.machine()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the git revision to compare with, e.g. origin/main")
    parser.add_argument(
        "--worktree",
        type=Path,
        default=Path("../review-base"),
        help="where to build the base (a git worktree; replaced if it exists)",
    )
    parser.add_argument("--source-file", type=Path, default=Path("reports/compare/source.md"))
    args = parser.parse_args(argv)
    head = Path.cwd()
    base_commit = run(["git", "rev-parse", "--verify", f"{args.base}^{{commit}}"], head, quiet=True).strip()
    cache = run(["dvc", "cache", "dir"], head, quiet=True).strip()

    # The base in a worktree of its own, on branch review/base, sharing the head's DVC cache.
    worktree = args.worktree.resolve()
    if worktree.exists():
        run(["git", "worktree", "remove", "--force", str(worktree)], head, quiet=True)
    run(["git", "worktree", "add", "--force", "-B", BRANCH, str(worktree), base_commit], head, quiet=True)
    run(["dvc", "cache", "dir", "--local", cache], worktree, quiet=True)

    if pulled(head) and pulled(worktree):
        stale = stale_stages(head)
        base_stages = yaml.safe_load((worktree / "dvc.yaml").read_text()).get("stages", {})
        if stale:
            # The same stages re-run on both sides; those only the head has run on the head alone.
            if shared := [stage for stage in stale if stage in base_stages]:
                run(["dvc", "repro", "--force", "--downstream", *shared], worktree)
            run(["dvc", "repro"], head)
            source = (
                f"Both sides pulled from the DVC remote, then {', '.join(stale)} (and what follows) re-run "
                f"on both, on {machine()}."
            )
        else:
            source = "Both sides are their committed results, pulled from the DVC remote: nothing was re-run."
    else:
        run(["dvc", "repro"], worktree)
        run(["dvc", "repro"], head)
        source = f"Both sides reproduced from scratch (`dvc repro`) on {machine()}."

    run(["git", "add", "-A"], worktree, quiet=True)
    run(
        [
            "git",
            "-c",
            "user.name=review",
            "-c",
            "user.email=review@localhost",
            "commit",
            "--allow-empty",
            "-qm",
            f"{args.base} as rebuilt for review",
        ],
        worktree,
        quiet=True,
    )
    source = f"Base: `{args.base}` ({base_commit[:7]}), built on branch {BRANCH}. {source}"
    write_text(args.source_file, source + "\n")
    print(f"rebuild: {source}")


if __name__ == "__main__":
    run_command(main)
