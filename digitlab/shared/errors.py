"""The one error type every stage raises for bad input, and how it reaches the user.

A `PipelineError` carries a message that names the problem and what to do about it.
`run_stage` prints it as a single line on stderr and exits non-zero, instead of a
traceback; SIGTERM is turned into the same orderly exit so that clean-up code runs.
"""

import signal
import sys
from collections.abc import Callable


class PipelineError(Exception):
    """Bad input or a failed step, described for the user in one line."""


def _exit_on_sigterm(signum, frame):
    # Raising here unwinds the stack, so `finally` blocks remove partial files.
    raise SystemExit(128 + signum)


def run_stage(main: Callable[[list[str] | None], None]) -> None:
    """Run a stage's `main()`, turning a PipelineError into `error: ...` and exit 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main(None)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no half-written file was left, run `dvc repro` again", file=sys.stderr)
        sys.exit(130)
