"""Writing the model file so that its bytes depend on the model alone.

A `.keras` file is a zip archive, and three things in it change from one save to the next of the
same model: `date_saved` in metadata.json, the modification time of every member, and in config.json
each `shared_object_id`, which Keras takes from the memory address of an object that several layers
share (their dtype policy). Two trainings that give the same weights would then give files with
different md5s, and DVC would take the second for a new model: `dvc.lock` would change, and evaluate
and sample_predict would re-run for nothing. So the archive is rewritten: a fixed time for every
member, no `date_saved` (Keras never reads it back), and shared objects numbered 1, 2, ... in the
order they appear, which keeps what is shared with what.

The same holds for model.onnx (export_onnx), which train then loads with onnxruntime and checks
against the Keras model (check_export). load_model reads a .keras file back (benchmarks, tests).
"""

import contextlib
import hashlib
import json
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

from digitlab.shared.errors import UserError

import keras
import numpy as np
import onnx

from digitlab.files.atomic import atomic_path
from digitlab.inference.onnx_model import load_onnx_model
from digitlab.inference.views import PREDICT_BATCH, predict_probabilities
from digitlab.training.model import RemoveBackground  # noqa: F401 - registers the layer, for load_model

# The earliest time a zip member can carry (1980-01-01 00:00), as reproducible-build tools use.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@contextlib.contextmanager
def rewritten(path: Path) -> Iterator[tuple[Path, Path]]:
    """(where Keras writes its file, where its normalised copy goes): the first in a temporary folder
    beside `path`, removed afterwards, the second renamed onto `path` only if all went well."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.partial") as folder,
        atomic_path(path) as normalised,
    ):
        yield Path(folder) / path.name, normalised


def save_model(model: keras.Model, path: Path) -> None:
    """Write `model` to `path` (.keras) whole or not at all, the same bytes for the same model."""
    with rewritten(path) as (saved, normalised):
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
        return {
            key: numbers.setdefault(value, len(numbers) + 1)
            if key == "shared_object_id"
            else numbered_shared_objects(value, numbers)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [numbered_shared_objects(value, numbers) for value in config]
    return config


def export_onnx(model: keras.Model, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `model` to `path` as ONNX (Keras's own `model.export`, which converts with tf2onnx), whole
    or not at all, the same bytes for the same model, with `metadata` as its metadata_props (what
    onnxruntime's `get_modelmeta().custom_metadata_map` reads back).

    tf2onnx names what it adds `<name>__<n>` (constants, transposes, unknown dimensions `unk__<n>`),
    with <n> from a counter that its graph rewrites advance in an order that changes from one process
    to the next; and of two equal constants it merges, which name survives changes too (`const_axes__9`
    or `const_starts__9`), and with it the order of the initializers. Two exports of the same weights
    gave the same nodes, in the same order, named differently. So each generated name becomes
    `generated__<k>`, k its rank of first appearance (inputs, then nodes in order), beside its Keras
    scope (`mnist_cnn_1/flatten_1/`), and the initializers are listed by name. The graph's doc_string,
    "converted from b'__inference___call___<n>'", names the traced TensorFlow function by a counter of
    the process (how many functions it traced before, which differs between an export at the end of
    training and one from a loaded model): it is dropped.
    The model is called once on a dummy batch first: the export traces a built model. Its batch
    normalisations are exported as the scale and shift `exactly_normalised` computes, so that no constant
    of model.onnx comes from TensorFlow's arithmetic, which differs from one CPU to another."""
    model = exactly_normalised(model)
    model(np.zeros((1, *model.input_shape[1:]), dtype="float32"), training=False)
    with rewritten(path) as (exported, normalised):
        with warnings.catch_warnings():  # Keras's tf2onnx_lib probes `np.object`, a FutureWarning under NumPy 2
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            model.export(str(exported), format="onnx", verbose=False)
        proto = onnx.load(exported)
        proto.graph.doc_string = ""
        in_canonical_order(proto.graph)
        numbered_generated_names(proto.graph)
        onnx.helper.set_model_props(proto, metadata or {})
        normalised.write_bytes(proto.SerializeToString(deterministic=True))


class ScaleShift(keras.layers.Layer):
    """A batch normalisation at inference, as its two constants: x * scale + shift, per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
        self.shift = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="shift")

    def call(self, x, training=None, mask=None):  # called as the batch normalisation was
        return x * self.scale + self.shift


def exactly_normalised(model: keras.Model) -> keras.Model:
    """A copy of `model` whose batch normalisations are ScaleShift layers, their scale gamma / sqrt(variance +
    epsilon) and shift beta - mean * scale computed by NumPy in float64 and rounded once to float32.

    Exported as they are, TensorFlow folds rsqrt(variance + epsilon) into a constant with its CPU kernel, an
    approximation (an estimate refined by a Newton step) whose last bits differ between CPUs: one model.keras
    gave another model.onnx on an AMD EPYC than on an Intel Xeon. NumPy's square root and division are exact
    to the rounding, on any CPU."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return ScaleShift(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for original, layer in zip(model.layers, copy.layers):
        if isinstance(original, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (np.asarray(w, dtype=np.float64) for w in original.get_weights())
            scale = gamma / np.sqrt(variance + original.epsilon)
            layer.set_weights([scale.astype(np.float32), (beta - mean * scale).astype(np.float32)])
        else:
            layer.set_weights(original.get_weights())
    return copy


# A name tf2onnx made: an optional scope ending in "/", then `word__<n>`, then maybe an output index ":0".
GENERATED = re.compile(r"^(?P<scope>.*/)?(?P<made>[^/]*__\d+)(?P<output>:\d+)?$")


def numbered_generated_names(graph, numbers: dict | None = None) -> None:
    """Rename, in place, every name of `graph` that tf2onnx generated by its rank of first appearance."""
    numbers = {} if numbers is None else numbers

    def renamed(name: str) -> str:
        match = GENERATED.match(name)
        if not match:
            return name
        rank = numbers.setdefault((match["scope"], match["made"]), len(numbers) + 1)
        return f"{match['scope'] or ''}generated__{rank}{match['output'] or ''}"

    def rename_values(values) -> None:
        for value in values:
            value.name = renamed(value.name)
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param"):
                    dim.dim_param = renamed(dim.dim_param)

    rename_values(graph.input)
    for node in graph.node:
        node.name = renamed(node.name)
        node.input[:] = [renamed(name) for name in node.input]
        node.output[:] = [renamed(name) for name in node.output]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                numbered_generated_names(attribute.g, numbers)
            for subgraph in attribute.graphs:
                numbered_generated_names(subgraph, numbers)
    rename_values(graph.output)
    rename_values(graph.value_info)
    for initializer in graph.initializer:
        initializer.name = renamed(initializer.name)
    ordered = sorted(graph.initializer, key=lambda initializer: initializer.name)
    copies = [onnx.TensorProto() for _ in ordered]
    for copy, initializer in zip(copies, ordered):
        copy.CopyFrom(initializer)
    del graph.initializer[:]
    graph.initializer.extend(copies)


def in_canonical_order(graph) -> None:
    """Reorder `graph`'s nodes, in place, into a topological order chosen by what each node is and what it
    reads, never by the counters in names. tf2onnx sorts the nodes by name before its own topological sort,
    and the names it generates carry a counter of the process (`Transpose__98`, `Transpose__102`), so nodes
    that do not depend on each other (the branches of a layer that reads its input twice, as
    RemoveBackground does) came out in an order that changed with what the process had exported before."""

    def uncounted(name: str) -> str:
        return re.sub(r"__\d+", "__", name)

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    place: dict[str, str] = {}  # each value made by a node emitted so far: its node's rank and output index

    def read(name: str) -> str:
        if name in place:
            return place[name]
        if name in initializers:
            tensor = initializers[name]
            content = hashlib.sha256(tensor.raw_data + bytes(str((list(tensor.dims), tensor.data_type)), "utf-8"))
            return f"constant {uncounted(name)} {content.hexdigest()}"
        return f"input {uncounted(name)}"

    def key(node) -> tuple:
        attributes = [attribute.SerializeToString(deterministic=True) for attribute in node.attribute]
        return uncounted(node.name), node.op_type, attributes, [read(name) for name in node.input]

    waiting = {id(node): sum(name in producer for name in node.input) for node in graph.node}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name in producer:
                readers.setdefault(name, []).append(node)
    ready = [node for node in graph.node if not waiting[id(node)]]
    ordered = []
    while ready:
        node = min(ready, key=key)
        ready.remove(node)
        for index, output in enumerate(node.output):
            place[output] = f"node {len(ordered):06d} output {index}"
            for reader in readers.get(output, []):
                waiting[id(reader)] -= 1
                if not waiting[id(reader)]:
                    ready.append(reader)
        ordered.append(node)
    if len(ordered) != len(graph.node):
        raise UserError("the exported ONNX graph has a cycle; it cannot be ordered")
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def load_model(path: str | Path) -> keras.Model:
    """Load a model written by the train stage; safe mode refuses embedded Python code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; run `dvc repro train` to train it")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as error:
        raise UserError(
            f"{path} is not a readable Keras model ({type(error).__name__}); run `dvc repro --force train`"
        ) from error


# How far the ONNX model's probabilities may stray from the Keras model's on the same images: float32
# arithmetic done in another order (onnxruntime's kernels, tf2onnx's folded constants) moves them by
# about 1e-7; a wrong export (other weights, a layer lost) moves them by far more, and changes answers.
PARITY_TOLERANCE = 1e-4


def check_parity(onnx_probabilities: np.ndarray, keras_probabilities: np.ndarray) -> float:
    """The largest difference of any probability between the ONNX model and the Keras model it was
    exported from, on the same images. Raises a UserError if any answer (argmax) differs or a
    probability differs by more than PARITY_TOLERANCE: then model.onnx is not the model trained.
    A check, not a metric: it can only pass, with a rounding residue, or stop the stage."""
    agreement = float((onnx_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1)).mean())
    difference = float(np.abs(onnx_probabilities - keras_probabilities).max())
    if agreement < 1 or not difference <= PARITY_TOLERANCE:
        raise UserError(
            f"model.onnx is not the Keras model: they give the same answer for {agreement:.2%} of the images "
            f"(must be all) and probabilities differ by up to {difference:.3g} (at most {PARITY_TOLERANCE:g}); "
            "run `dvc repro --force train` to export both again"
        )
    return difference


def check_export(model: keras.Model, onnx_path: Path, images: np.ndarray) -> float:
    """Load `onnx_path` as users will (onnxruntime) and check that it answers `images` as `model` does
    (check_parity); the largest difference of any probability."""
    onnx_model = load_onnx_model(onnx_path)
    return check_parity(
        predict_probabilities(onnx_model, images, PREDICT_BATCH), predict_probabilities(model, images, PREDICT_BATCH)
    )
