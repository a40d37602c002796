"""The search: search.yaml's study, run as DVC experiments; its summary in reports/search/ (docs/search.md).

Usage: python -m digitlab.search [--config search.yaml] [--study NAME] [--trials N] [--confirm]
                                 [--storage postgresql://... --push GIT_REMOTE [--heartbeat SECONDS]]
Run it again to resume; Ctrl-C stops the running experiment and marks its trial.
"""

import argparse
import sys
from pathlib import Path

from digitlab.shared.errors import UserError, run_command


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m digitlab.search", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("search.yaml"), help="the search space (search.yaml)")
    parser.add_argument("--study", help="the study's name, and its experiments' prefix (default: search.yaml's)")
    parser.add_argument(
        "--storage",
        help="a database URL shared by many machines, e.g. "
        "postgresql://user:password@host/db (default: .search/STUDY.journal)",
    )
    parser.add_argument("--trials", type=int, help="complete trials wanted (default: search.yaml's)")
    parser.add_argument(
        "--push",
        metavar="GIT_REMOTE",
        help="push each complete trial's experiment there (and its outputs to the DVC remote): "
        "how the machines of one study share their trials (docs/search.md)",
    )
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="then re-run the best trials and the default with search.yaml's confirm.seeds and "
        "compare them on validation: better, worse or noise",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=20,
        metavar="SECONDS",
        help="with --storage: a trial silent for three heartbeats is taken for dead (default 20)",
    )
    args = parser.parse_args(argv)
    try:
        from tqdm import tqdm

        from digitlab.search.space import load_search
        from digitlab.search.study import search_study
        from digitlab.search.summary import write_summary
    except ImportError as error:
        raise UserError(
            f"the search needs the pipeline's packages ({error.name} is missing): `uv sync --frozen` installs them"
        ) from None
    search = load_search(args.config)
    if args.trials is not None:
        if args.trials < 1:
            raise UserError(f"--trials must be at least 1, got {args.trials}")
        search = search.model_copy(update={"trials": args.trials})
    if args.heartbeat < 1:
        raise UserError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
    name = args.study or search.study
    progress = tqdm(total=search.trials, unit="trial", file=sys.stderr) if sys.stderr.isatty() else None
    try:
        study = search_study(search, name, args.storage, progress, args.push, args.heartbeat)
    finally:
        if progress is not None:
            progress.close()
    verdict = ""
    if args.confirm:
        from digitlab.search.confirm import confirm
        from digitlab.search.study import STATE_DIR

        verdict = confirm(study, search, name, STATE_DIR / name / "logs")
        print("search: " + verdict.split("\n", 1)[0])
    print(f"search: {write_summary(study, search, name, verdict)} (`dvc exp show` lists every trial)")


if __name__ == "__main__":
    run_command(main)
