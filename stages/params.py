"""Loading params.yaml and checking every key up front, before any slow work.

The schema below is the single list of what params.yaml may hold. A missing key,
an unknown key (a typo such as `learing_rate`), a wrong type or a value out of range
is reported with its full key path, e.g. `train.epochs: expected an integer >= 1, got 'ten'`.
"""

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class Int:
    minimum: int | None = None
    maximum: int | None = None
    nullable: bool = False

    def check(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer{self._range()}"
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            return f"expected an integer{self._range()}"
        return None

    def _range(self) -> str:
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum}")
        text = " " + " and ".join(bounds) if bounds else ""
        return text + (" or null" if self.nullable else "")


@dataclass(frozen=True)
class Float:
    minimum: float
    maximum: float
    include_minimum: bool = True
    include_maximum: bool = True

    def check(self, value: Any) -> str | None:
        low = "[" if self.include_minimum else "("
        high = "]" if self.include_maximum else ")"
        expected = f"expected a number in {low}{self.minimum}, {self.maximum}{high}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return expected
        above = value >= self.minimum if self.include_minimum else value > self.minimum
        below = value <= self.maximum if self.include_maximum else value < self.maximum
        return None if above and below else expected


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def check(self, value: Any) -> str | None:
        if value not in self.options:
            return "expected one of " + ", ".join(self.options)
        return None


@dataclass(frozen=True)
class Bool:
    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else "expected true or false"


@dataclass(frozen=True)
class IntList:
    item: Int
    min_length: int = 1

    def check(self, value: Any) -> str | None:
        expected = f"expected a list of at least {self.min_length} integers{self.item._range()}"
        if not isinstance(value, list) or len(value) < self.min_length:
            return expected
        return expected if any(self.item.check(item) for item in value) else None


SCHEMA: dict[str, Any] = {
    "seed": Int(minimum=0),
    "fetch": {
        "timeout_s": Float(0, 3600, include_minimum=False),
    },
    "explore": {
        "sample_count": Int(minimum=1, maximum=400),
        "seed": Int(minimum=0),
    },
    "data": {
        "validation_fraction": Float(0, 1, include_minimum=False, include_maximum=False),
        "split_seed": Int(minimum=0),
        # At least two images per class, so that both splits can hold every class.
        "max_train_samples": Int(minimum=20, maximum=60000, nullable=True),
    },
    "model": {
        "conv_filters": IntList(Int(minimum=1, maximum=1024)),
        "convs_per_block": Int(minimum=1, maximum=4),
        "kernel_size": Int(minimum=1, maximum=7),
        "padding": Choice(("same", "valid")),
        "pooling": Choice(("max", "average")),
        "batch_norm": Bool(),
        "activation": Choice(("relu", "elu", "gelu", "selu", "silu", "tanh")),
        "dense_units": Int(minimum=0, maximum=8192),
        "dropout": Float(0, 1, include_maximum=False),
    },
    "train": {
        "epochs": Int(minimum=1, maximum=1000),
        "batch_size": Int(minimum=1, maximum=65536),
        "optimizer": Choice(("adam", "adamw", "sgd", "rmsprop")),
        "learning_rate": Float(0, 10, include_minimum=False),
        "lr_schedule": Choice(("constant", "cosine")),
        "warmup_epochs": Float(0, 1000),
        "weight_decay": Float(0, 1),
        "label_smoothing": Float(0, 1, include_maximum=False),
        "augment": {
            "rotation_degrees": Float(0, 180),
            "shift_fraction": Float(0, 0.5),
            "zoom_fraction": Float(0, 0.5),
        },
    },
    "evaluate": {
        "batch_size": Int(minimum=1, maximum=65536),
        "calibration_bins": Int(minimum=2, maximum=100),
        "mistakes": Int(minimum=1, maximum=100),
    },
    "sample_predict": {
        "count": Int(minimum=1, maximum=400),
        "seed": Int(minimum=0),
    },
}


def validate(params: Any, schema: dict[str, Any] = SCHEMA, prefix: str = "") -> list[str]:
    """Return one message per problem found in `params`, each starting with its key path."""
    if not isinstance(params, dict):
        return [f"{prefix.rstrip('.') or 'params.yaml'}: expected a mapping of keys to values"]
    problems = []
    for key, rule in schema.items():
        path = prefix + key
        if key not in params:
            problems.append(f"{path}: missing")
        elif isinstance(rule, dict):
            problems.extend(validate(params[key], rule, path + "."))
        elif (problem := rule.check(params[key])) is not None:
            problems.append(f"{path}: {problem}, got {params[key]!r}")
    for key in params:
        if key not in schema:
            problems.append(f"{prefix}{key}: unknown key; known keys here: {', '.join(schema)}")
    return problems


def _check_model_fits(model_params: dict) -> list[str]:
    """The conv blocks must leave at least a 1x1 feature map of the 28x28 image."""
    size = 28
    for _ in model_params["conv_filters"]:
        for _ in range(model_params["convs_per_block"]):
            if model_params["padding"] == "valid":
                size -= model_params["kernel_size"] - 1
        size //= 2
    if size < 1:
        return [
            "model.conv_filters: this many blocks shrink the 28x28 image to nothing; "
            "use fewer blocks, fewer convs_per_block, a smaller kernel_size or padding: same"
        ]
    return []


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate params.yaml; raise PipelineError listing every problem."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise PipelineError(f"{path} not found; run the stage from the project root") from error
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from error
    problems = validate(params)
    if not problems:
        problems = _check_model_fits(params["model"])
    if problems:
        raise PipelineError(f"invalid {path}: " + "; ".join(problems))
    return params


def with_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `params` with dotted keys set, as `dvc exp run -S train.epochs=2` would set them."""
    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        section = params
        for parent in parents:
            section = section[parent]
        section[key] = value
    return params
