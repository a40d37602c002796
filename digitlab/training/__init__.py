"""Training: the CNN built from params (model), fitting it (fitting), on several devices or machines
(distribute), writing and checking the model files (saving).

TensorFlow is imported here, once, with its start-up chatter filtered out: TF_CPP_MIN_LOG_LEVEL does
not reach what it logs before its logging starts (oneDNN's notice, "Could not find cuda drivers"),
nor the ERROR line "failed call to cuInit" that a CUDA build prints on every machine without a GPU.
Anything else TensorFlow writes to stderr meanwhile is passed on.
"""

import os
import re
import sys
import tempfile

import digitlab.shared  # noqa: F401  (TensorFlow's and Matplotlib's settings, before either is imported)

# What TensorFlow writes at start-up on a machine without a GPU, and no one needs to read.
START_UP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+\] "  # absl's INFO lines: oneDNN's notice, "Could not find cuda drivers"
    r"|E\d{4} [\d:.]+ +\d+ \S+\] failed call to cuInit"  # no GPU, or no driver: TensorFlow uses the CPU
)


def _import_tensorflow_quietly() -> None:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # where the cuInit line comes from
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not START_UP_NOISE.match(line):
                    print(line, file=sys.stderr)


_import_tensorflow_quietly()
