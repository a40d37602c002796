"""What every stage shares, fetch included: params.yaml validated (params), MNIST's facts (mnist), one-line
errors (errors), a stage's command line (command), test-time augmentation's views (tta), and the environment
TensorFlow and Matplotlib need (here), TensorFlow's quiet start included."""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Settings that must be in place before TensorFlow or Matplotlib is first imported. Every stage runs
# this first (stages/__init__.py imports it), and so does every folder of digitlab that imports either.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files; no display needed

# What TensorFlow writes at start-up on a machine without a GPU, before its logging starts (so that
# TF_CPP_MIN_LOG_LEVEL does not reach it), and no one needs to read.
START_UP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ \S+\] "  # absl's INFO lines: oneDNN's notice, "Could not find cuda drivers"
    r"|E\d{4} [\d:.]+ +\d+ \S+\] failed call to cuInit"  # no GPU, or no driver: TensorFlow uses the CPU
)


class QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Whoever imports TensorFlow first (keras, dvclive, a stage), its start-up lines are filtered out of
    stderr; anything else it writes meanwhile is passed on."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and the real finders find it
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def load_quietly(module):
                with filtered_stderr():
                    load(module)
                    module.config.list_physical_devices()  # where the cuInit line comes from

            spec.loader.exec_module = load_quietly
        return spec


@contextlib.contextmanager
def filtered_stderr():
    """File descriptor 2 captured, and written back without START_UP_NOISE's lines (C++ writes there too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not START_UP_NOISE.match(line):
                    print(line, file=sys.stderr)


if "tensorflow" not in sys.modules and not any(isinstance(f, QuietTensorFlow) for f in sys.meta_path):
    sys.meta_path.insert(0, QuietTensorFlow())
