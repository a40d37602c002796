"""params.yaml validation: every problem is reported up front, with its key path."""

import copy

from digitlab.shared.errors import UserError
from digitlab.shared.params import PARAMS_FILE, load_params, validate, with_overrides

import pytest
import yaml

from tests.conftest import BASE_PARAMS, PROJECT_ROOT


def with_value(path: str, value):
    return with_overrides(BASE_PARAMS, {path: value})


def without(path: str):
    params = copy.deepcopy(BASE_PARAMS)
    *parents, key = path.split(".")
    section = params
    for parent in parents:
        section = section[parent]
    del section[key]
    return params


def test_committed_params_are_valid():
    assert validate(yaml.safe_load((PROJECT_ROOT / PARAMS_FILE).read_text())) == []


def test_the_tests_fixed_params_have_the_keys_of_params_yaml():
    # The fixture's values may differ from the defaults; its keys may not, or a new param would go untested.
    def keys(tree: dict, prefix: str = "") -> set[str]:
        return {
            name
            for key, value in tree.items()
            for name in (keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"})
        }

    assert keys(BASE_PARAMS) == keys(yaml.safe_load((PROJECT_ROOT / PARAMS_FILE).read_text()))


def test_mnist_predict_and_the_app_use_the_model_as_the_evaluate_stage_does():
    from digitlab.shared.tta import DEFAULT_VIEWS

    assert DEFAULT_VIEWS == yaml.safe_load((PROJECT_ROOT / PARAMS_FILE).read_text())["evaluate"]["tta_views"]


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("train.epochs", "ten", "train.epochs: expected an integer >= 1"),
        ("train.epochs", -1, "train.epochs: expected an integer >= 1"),
        ("train.epochs", 2.5, "train.epochs: expected an integer"),
        ("train.batch_size", 0, "train.batch_size: expected an integer >= 1"),
        ("model.dropout", 1.5, r"model.dropout: expected a number in \[0, 1\)"),
        ("data.validation_fraction", 0, r"data.validation_fraction: expected a number in \(0, 1\)"),
        ("data.validation_fraction", 1, r"data.validation_fraction: expected a number in \(0, 1\)"),
        ("data.max_train_samples", 5, "data.max_train_samples: expected an integer >= 20"),
        ("train.optimizer", "adagrad", "train.optimizer: expected one of adam, adamw, sgd, rmsprop"),
        ("model.activation", "relu6", "model.activation: expected one of relu"),
        ("model.batch_norm", "yes", "model.batch_norm: expected true or false"),
        ("model.conv_filters", [], "model.conv_filters: expected a list"),
        ("model.conv_filters", [32, "64"], "model.conv_filters: expected a list"),
        ("train.learning_rate", float("nan"), "train.learning_rate: expected a number"),
        ("train.warmup_epochs", -1, r"train.warmup_epochs: expected a number in \[0, 1000\]"),
        ("seed", True, "seed: expected an integer"),
        ("train.augment", 0.1, "train.augment: expected a mapping"),
        ("train.distribute", "horovod", "train.distribute: expected one of none, mirrored, multi_worker"),
        ("train.augment.elastic_alpha", -1, "train.augment.elastic_alpha: expected a number in \\[0, 100\\], got -1"),
        ("train.augment.elastic_sigma", 0, "train.augment.elastic_sigma: expected a number in \\(0, 10\\], got 0"),
        ("evaluate.tta_views", 4, "evaluate.tta_views: expected one of 1, 5, 9"),
        ("reject.false_rejection", 1, "reject.false_rejection: expected a number in \\[0, 1\\), got 1"),
        ("reject.val_nondigits", 5, "reject.val_nondigits: expected an integer >= 10 and <= 100000, got 5"),
        ("reject.test_user_digits", 9, "reject.test_user_digits: expected an integer >= 10 and <= 100000, got 9"),
        ("train.mixed_precision", "float16", "train.mixed_precision: expected one of none, mixed_float16"),
    ],
)
def test_bad_value_is_reported_with_its_key_path(path, value, message):
    problems = validate(with_value(path, value))
    assert len(problems) == 1
    assert problems[0].startswith(path) and __import__("re").search(message, problems[0])


def test_missing_key_is_reported():
    assert validate(without("train.learning_rate")) == ["train.learning_rate: missing"]


def test_typo_in_a_key_is_reported_not_ignored():
    params = with_value("train.learing_rate", 0.01)
    assert validate(params) == [
        "train.learing_rate: unknown key; known keys here: epochs, batch_size, optimizer, learning_rate, "
        "lr_schedule, warmup_epochs, weight_decay, label_smoothing, ema_momentum, augment, distribute, mixed_precision"
    ]


def test_max_train_samples_may_be_null():
    assert validate(with_value("data.max_train_samples", None)) == []


def _write(tmp_path, params) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params) if not isinstance(params, str) else params)
    return path


def test_load_params_lists_every_problem_on_one_line(tmp_path):
    params = with_value("train.epochs", "ten")
    params["model"]["dropout"] = 1.5
    with pytest.raises(UserError) as error:
        load_params(_write(tmp_path, params))
    message = str(error.value)
    assert "train.epochs" in message and "model.dropout" in message and "\n" not in message


def test_load_params_rejects_blocks_that_shrink_the_image_to_nothing(tmp_path):
    params = with_value("model.conv_filters", [8, 8, 8, 8])
    with pytest.raises(UserError, match="model.conv_filters: this many blocks shrink"):
        load_params(_write(tmp_path, params))


@pytest.mark.parametrize("window", [1, 2, 8])
def test_load_params_refuses_a_background_window_that_is_not_odd_and_at_least_3(tmp_path, window):
    params = with_value("model.background_window", window)
    with pytest.raises(
        UserError,
        match=rf"model.background_window: expected 0 \(off\) or an odd width of "
        rf"at least 3.*got {window}$",
    ):
        load_params(_write(tmp_path, params))


def test_load_params_takes_any_odd_background_window_or_none(tmp_path):
    for window in (0, 3, 9, 27):
        assert (
            load_params(_write(tmp_path, with_value("model.background_window", window))).model.background_window
            == window
        )


def test_load_params_reports_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="is not valid YAML"):
        load_params(_write(tmp_path, "train: [unclosed"))


def test_load_params_reports_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params(tmp_path / "params.yaml")


def test_the_view_counts_params_accept_are_those_the_views_define():
    from typing import get_args

    from digitlab.shared.params import Evaluate

    from digitlab.inference.views import VIEWS

    assert get_args(Evaluate.model_fields["tta_views"].annotation) == tuple(VIEWS)


def test_load_params_reads_yaml_1_2_numbers(tmp_path):
    # `3e-05` and `1e-5` are numbers in YAML 1.2 (what DVC writes) and strings in YAML 1.1 (PyYAML).
    text = yaml.safe_dump(BASE_PARAMS).replace("learning_rate: 0.003", "learning_rate: 3e-05")
    text = text.replace("weight_decay: 0.0", "weight_decay: 1e-5")
    params = load_params(_write(tmp_path, text))
    assert params.train.learning_rate == 3e-05 and params.train.weight_decay == 1e-05


# A one-stage pipeline whose command reads params.yaml as every stage does, and writes what it read.
READ_PARAMS = (
    "import json; from digitlab.shared.params import load_params; "
    "open('read.json', 'w').write(json.dumps(load_params().model_dump()))"
)
SETS = {  # what `dvc exp run -S` writes: small and large floats, null, a list, a boolean
    "train.learning_rate": ("3e-5", 3e-05),
    "train.weight_decay": ("1e-5", 1e-05),
    "train.label_smoothing": ("1e-12", 1e-12),
    "fetch.timeout_s": ("2.5e3", 2500.0),
    "data.max_train_samples": ("null", None),
    "model.conv_filters": ("[8,16]", [8, 16]),
    "model.batch_norm": ("false", False),
}


@pytest.mark.slow
def test_every_value_dvc_exp_run_sets_is_read_back(tmp_path):
    import os
    import subprocess

    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / PARAMS_FILE).read_text())
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "read": {
                        "cmd": f'python -c "{READ_PARAMS}"',
                        "params": ["seed", "fetch", "train", "model", "data"],
                        "outs": [{"read.json": {"cache": False}}],
                    }
                }
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "DVC_NO_ANALYTICS": "1"}

    def run(*command):
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)

    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        assert run(*command).returncode == 0
    sets = [argument for key, (value, _) in SETS.items() for argument in ("-S", f"{key}={value}")]
    result = run("dvc", "exp", "run", *sets)
    assert result.returncode == 0, result.stdout + result.stderr
    assert isinstance(yaml.safe_load((tmp_path / "params.yaml").read_text())["train"]["learning_rate"], str)  # 1.1
    read = __import__("json").loads((tmp_path / "read.json").read_text())
    for key, (_, expected) in SETS.items():
        section, name = key.split(".")
        assert read[section][name] == expected, key
