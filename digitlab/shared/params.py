"""params.yaml, typed and checked up front: one pydantic model per section.

A missing key, an unknown key (a typo such as `learing_rate`), a wrong type or a value
out of range is reported with its full key path before any stage does slow work, e.g.
`train.epochs: expected an integer >= 1 and <= 1000, got 'ten'`. Each range is what the
code that reads the key accepts.

params.yaml is read as YAML 1.2, the YAML that DVC writes: `dvc exp run -S train.learning_rate=3e-5`
writes `3e-05`, a number in YAML 1.2 but a string in PyYAML's YAML 1.1.
"""

import copy
import functools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from digitlab.shared.errors import UserError
from digitlab.shared.mnist import IMAGE_SIZE
from digitlab.shared.tta import ViewCount

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML, YAMLError

PARAMS_FILE = Path("params.yaml")
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # NumPy's seeds stop at 2**32 - 1
ImageCount = Annotated[int, Field(ge=10, le=100000)]  # how many images preprocess makes for a split


class Section(BaseModel):
    # Strict: `epochs: "10"` or `batch_norm: 1` is a mistake to report, not to coerce.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Fetch(Section):
    timeout_s: float = Field(gt=0, le=3600)


class Explore(Section):
    sample_count: int = Field(ge=1, le=400)
    seed: Seed


class Data(Section):
    validation_fraction: float = Field(gt=0, lt=1)
    split_seed: Seed
    # At least two images per class, so that both splits can hold every class.
    max_train_samples: int | None = Field(ge=20, le=60000)


class Model(Section):
    background_window: int = Field(ge=0, le=IMAGE_SIZE)
    conv_filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(min_length=1)
    convs_per_block: int = Field(ge=1, le=4)
    kernel_size: int = Field(ge=1, le=7)
    padding: Literal["same", "valid"]
    pooling: Literal["max", "average"]
    batch_norm: bool
    activation: Literal["relu", "elu", "gelu", "selu", "silu", "tanh"]
    dense_units: int = Field(ge=0, le=8192)
    dropout: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def leaves_a_feature_map(self) -> "Model":
        size = IMAGE_SIZE
        for _ in self.conv_filters:
            if self.padding == "valid":
                size -= self.convs_per_block * (self.kernel_size - 1)
            size //= 2  # the pooling after each block
        if size < 1:
            # A model validator's message starts with the key it is about (see `validate`).
            raise ValueError(
                "conv_filters: this many blocks shrink the 28x28 image to nothing; use fewer blocks, "
                "fewer convs_per_block, a smaller kernel_size or padding: same"
            )
        return self

    @model_validator(mode="after")
    def centres_the_background_window(self) -> "Model":
        if not is_background_window(self.background_window):
            raise ValueError(
                f"background_window: expected 0 (off) or an odd width of at least 3, a square "
                f"centred on each pixel (the default is 9), got {self.background_window}"
            )
        return self


def is_background_window(window: int) -> bool:
    """Whether `window` can be model.background_window: 0 (off) or an odd width of at least 3. The layer's
    opening is only an opening (never above the image) on a square centred on each pixel; a window of 1
    opens the image to itself and takes every stroke away."""
    return window == 0 or (window >= 3 and window % 2 == 1)


class Augment(Section):
    rotation_degrees: float = Field(ge=0, le=180)
    shift_fraction: float = Field(ge=0, le=0.5)
    zoom_fraction: float = Field(ge=0, le=0.5)
    elastic_alpha: float = Field(ge=0, le=100)
    elastic_sigma: float = Field(gt=0, le=10)
    shear: float = Field(ge=0, le=1)
    stroke_width: float = Field(ge=0, le=1)


class Train(Section):
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: float = Field(gt=0, le=10)
    lr_schedule: Literal["constant", "cosine"]
    warmup_epochs: float = Field(ge=0, le=1000)
    weight_decay: float = Field(ge=0, le=1)
    label_smoothing: float = Field(ge=0, lt=1)
    ema_momentum: float = Field(ge=0, lt=1)
    augment: Augment
    distribute: Literal["none", "mirrored", "multi_worker"]
    mixed_precision: Literal["none", "mixed_float16", "mixed_bfloat16"]


class Reject(Section):
    outlier_share: float = Field(ge=0, le=1)
    outlier_weight: float = Field(ge=0, le=10)
    false_rejection: float = Field(ge=0, lt=1)
    val_nondigits: ImageCount
    test_nondigits: ImageCount
    val_user_digits: ImageCount
    test_user_digits: ImageCount
    seed: Seed


class Evaluate(Section):
    batch_size: int = Field(ge=1, le=65536)
    tta_views: ViewCount
    calibration_bins: int = Field(ge=2, le=100)
    mistakes: int = Field(ge=1, le=100)
    corruption_images: int = Field(ge=1, le=10000)
    corruption_seed: Seed


class SamplePredict(Section):
    count: int = Field(ge=1, le=400)
    seed: Seed


class Params(Section):
    seed: Seed
    fetch: Fetch
    explore: Explore
    data: Data
    reject: Reject
    model: Model
    train: Train
    evaluate: Evaluate
    sample_predict: SamplePredict


def _expected(annotation: Any, constraints: list) -> str:
    """What a key of this type and these constraints accepts, in words."""
    bounds = {
        name: getattr(c, name)
        for c in constraints
        for name in ("ge", "gt", "le", "lt", "min_length")
        if getattr(c, name, None) is not None
    }
    nullable = type(None) in get_args(annotation)  # `int | None`: the only nullable kind of key here
    if nullable or annotation is int:
        limits = " and ".join(f"{sign} {bounds[name]}" for name, sign in (("ge", ">="), ("le", "<=")) if name in bounds)
        return f"expected an integer {limits}" + (" or null" if nullable else "")
    if annotation is float:
        low = f"[{bounds['ge']}" if "ge" in bounds else f"({bounds['gt']}"
        return f"expected a number in {low}, " + (f"{bounds['le']}]" if "le" in bounds else f"{bounds['lt']})")
    if annotation is bool:
        return "expected true or false"
    if get_origin(annotation) is Literal:
        return "expected one of " + ", ".join(map(str, get_args(annotation)))
    if get_origin(annotation) is list:
        item_type, item_field = get_args(get_args(annotation)[0])  # Annotated[int, Field(...)]
        items = _expected(item_type, item_field.metadata).replace("expected an integer", "integers")
        return f"expected a list of at least {bounds['min_length']} {items}"
    return "expected a mapping of keys to values"


def validate(data: Any) -> list[str]:
    """One message per problem in `data` (params.yaml as read), each starting with its key path."""
    try:
        Params.model_validate(data)
        return []
    except ValidationError as error:
        problems = {}
        for problem in error.errors():
            section, field, path = Params, None, []
            for key in problem["loc"]:  # down to the key, not into a list's items
                if key not in getattr(section, "model_fields", {}):
                    break
                field, path = section.model_fields[key], [*path, key]
                section = field.annotation
            name = ".".join(path) or "params.yaml"
            if problem["type"] == "extra_forbidden":
                name = ".".join(map(str, problem["loc"]))
                message = f"unknown key; known keys here: {', '.join(section.model_fields)}"
            elif problem["type"] == "missing":
                message = "missing"
            elif problem["type"] == "value_error":  # from a model validator, whose message names its key first
                name, message = f"{name}.{problem['ctx']['error']}".split(": ", 1)
            elif field is None:
                message = "expected a mapping of keys to values"
            else:
                value = functools.reduce(lambda section, key: section[key], path, data)  # a list whole, not its item
                message = f"{_expected(field.annotation, field.metadata)}, got {value!r}"
            problems.setdefault(name, f"{name}: {message}")
        return list(problems.values())


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise UserError listing every problem on one line."""
    path = Path(path)
    try:
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))  # YAML 1.2, as DVC writes it
    except FileNotFoundError as error:
        raise UserError(f"{path} not found; run the stage from the project root") from error
    except YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from error
    if problems := validate(data):
        raise UserError(f"invalid {path}: " + "; ".join(problems))
    return Params.model_validate(data)


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of params.yaml's data with dotted keys set, as `dvc exp run -S train.epochs=2` sets them."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        section = data
        for parent in parents:
            section = section[parent]
        section[key] = value
    return data
