"""Fail if dvc.lock does not match the code, params and reports committed beside it.

On a clean checkout the data and model are absent (DVC reports them "deleted" or
"not in cache"); anything else that `dvc status` reports (a modified dependency,
a changed param or command, a modified report) means that someone changed the
pipeline without running `dvc repro` and committing the new dvc.lock.
"""

import json
import subprocess
import sys

ABSENT = {"deleted", "not in cache"}

status = json.loads(subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, check=True).stdout)
stale = []
for stage, changes in status.items():
    for change in changes:
        if not isinstance(change, dict):
            stale.append(f"{stage}: {change}")
            continue
        for kind, paths in change.items():
            if not isinstance(paths, dict):
                stale.append(f"{stage}: {kind}")
                continue
            for path, state in paths.items():
                if isinstance(state, dict):  # params: {"params.yaml": {"seed": "modified"}}
                    stale.extend(f"{stage}: {kind} {path}:{key} {how}" for key, how in state.items())
                elif state not in ABSENT:
                    stale.append(f"{stage}: {kind} {path} {state}")
if stale:
    print(
        "error: dvc.lock does not match the committed code and params; run `dvc repro` and commit dvc.lock:",
        "; ".join(stale),
        file=sys.stderr,
    )
    sys.exit(1)
print("dvc.lock matches the committed code, params and reports")
