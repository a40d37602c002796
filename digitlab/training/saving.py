"""Writing the model file so that its bytes depend on the model alone.

A `.keras` file is a zip archive, and three things in it change from one save to the next of the
same model: `date_saved` in metadata.json, the modification time of every member, and in config.json
each `shared_object_id`, which Keras takes from the memory address of an object that several layers
share (their dtype policy). Two trainings that give the same weights would then give files with
different md5s, and DVC would take the second for a new model: `dvc.lock` would change, and evaluate
and sample_predict would re-run for nothing. So the archive is rewritten: a fixed time for every
member, no `date_saved` (Keras never reads it back), and shared objects numbered 1, 2, ... in the
order they appear, which keeps what is shared with what.
"""

import json
import tempfile
import zipfile
from pathlib import Path

import keras

from digitlab.shared.atomic import atomic_path

# The earliest time a zip member can carry (1980-01-01 00:00), as reproducible-build tools use.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def save_model(model: keras.Model, path: Path) -> None:
    """Write `model` to `path` (.keras) whole or not at all, the same bytes for the same model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.partial") as folder, \
            atomic_path(path) as normalised:
        saved = Path(folder) / path.name
        model.save(saved)
        with zipfile.ZipFile(saved) as source, zipfile.ZipFile(normalised, "w") as target:
            for member in source.infolist():
                data = source.read(member)
                if member.filename == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata).encode()
                elif member.filename == "config.json":
                    data = json.dumps(numbered_shared_objects(json.loads(data))).encode()
                fixed = zipfile.ZipInfo(member.filename, date_time=FIXED_TIME)
                fixed.compress_type = member.compress_type
                fixed.external_attr = member.external_attr
                target.writestr(fixed, data)


def numbered_shared_objects(config, numbers: dict | None = None):
    """`config` with each distinct `shared_object_id` replaced by its rank of first appearance."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, dict):
        return {key: numbers.setdefault(value, len(numbers) + 1) if key == "shared_object_id"
                else numbered_shared_objects(value, numbers) for key, value in config.items()}
    if isinstance(config, list):
        return [numbered_shared_objects(value, numbers) for value in config]
    return config
