"""search.yaml: what a study varies, what it optimises and what it holds fixed, checked before any trial runs."""

from pathlib import Path
from typing import Any, Literal

from digitlab.shared.errors import UserError
from digitlab.shared.params import PARAMS_FILE, validate, with_overrides

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SEARCH_FILE = Path("search.yaml")
# The files an objective may come from: validation and training time. The test split never chooses.
OBJECTIVE_FILES = ("reports/train/metrics.json", "reports/train/speed.json")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Strict):
    """A number between low and high; `log` samples its logarithm evenly; `integer` for whole numbers."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low above 0, got {self.low:g}")
        return self


class Choice(Strict):
    choices: list[Any] = Field(min_length=2)


class Objective(Strict):
    metric: str  # dotted, as `dvc metrics show` names it: eval.accuracy, train.seconds
    file: str = "reports/train/metrics.json"
    direction: Literal["maximize", "minimize"]

    @model_validator(mode="after")
    def not_the_test_split(self) -> "Objective":
        if self.file not in OBJECTIVE_FILES:
            raise ValueError(
                f"{self.file}: an objective comes from validation or training time only "
                f"({', '.join(OBJECTIVE_FILES)}); the test split never chooses"
            )
        return self


class Confirm(Strict):
    best: int = Field(2, ge=1)  # the best trials re-run, with the default
    seeds: list[int] = Field([42, 43, 44], min_length=2)


class Search(Strict):
    study: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")  # also the prefix of every experiment's name
    trials: int = Field(ge=1)
    seed: int = 42  # the pipeline's seed for every trial; and the sampler's
    objectives: list[Objective] = Field(min_length=1, max_length=2)
    space: dict[str, Range | Choice] = Field(min_length=1)
    fixed: dict[str, Any] = {}
    confirm: Confirm = Confirm()


def load_search(path: Path = SEARCH_FILE, params_file: Path = PARAMS_FILE) -> Search:
    """Read and check search.yaml: its shape, and every value it can give against params.yaml's own rules."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found: write the study's search space there (docs/search.md)") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from None
    try:
        search = Search.model_validate(data)
    except ValidationError as error:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
        raise UserError(f"invalid {path}: " + "; ".join(problems)) from None
    params = yaml.safe_load(Path(params_file).read_text())
    # Every key a trial sets, at each end of its range and at each choice, must make a valid params.yaml.
    for key, dimension in {**search.space, **{k: Choice(choices=[v, v]) for k, v in search.fixed.items()}}.items():
        values = dimension.choices if isinstance(dimension, Choice) else [dimension.low, dimension.high]
        for value in values:
            value = int(value) if isinstance(dimension, Range) and dimension.integer else value
            try:
                candidate = with_overrides(params, {**search.fixed, key: value})
            except (KeyError, TypeError):
                raise UserError(f"invalid {path}: {key} is not a key of {params_file}") from None
            if problems := validate(candidate):
                raise UserError(
                    f"invalid {path}: {key} = {value!r} makes an invalid {params_file}: " + "; ".join(problems)
                )
    return search
