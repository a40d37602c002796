"""Another checkout of this repository, measured beside this one (`--baseline CHECKOUT` of
app_benchmark.py and predict_benchmark.py): its code goes first on PYTHONPATH, so the installed
commands (`mnist-predict`, `python -m digitlab.serving.app`) run it instead of this checkout's."""

import os
import subprocess
from pathlib import Path


def baseline_env(checkout: Path) -> dict[str, str]:
    """This process's environment with `checkout` first on PYTHONPATH (what was there stays after it)."""
    return os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout.resolve()), os.environ.get("PYTHONPATH")]))
    }


def describe(checkout: Path) -> str:
    """`checkout` and its commit, e.g. "/tmp/old at 3c48ff8"."""
    commit = (
        subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "?"
    )
    return f"{checkout} at {commit}"
