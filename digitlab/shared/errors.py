"""The one error type for bad input, raised by the stages and the commands alike, and how it reaches the user.

A `UserError` carries a message that names the problem and what to do about it.
`run_command` prints it as a single line on stderr and exits non-zero, instead of a
traceback; SIGTERM is turned into the same orderly exit so that clean-up code runs.
"""

import signal
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input or a failed step, described for the user in one line."""


def _exit_on_sigterm(signum, frame):
    # Raising here unwinds the stack, so `finally` blocks remove partial files.
    raise SystemExit(128 + signum)


def run_command(main: Callable[[list[str] | None], None]) -> None:
    """Run a stage's or a command's `main()`, turning a UserError into `error: ...` and exit 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main(None)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no half-written file was left, run `dvc repro` again", file=sys.stderr)
        sys.exit(130)
