"""Preprocessing: scaling, the stratified split, and arrays stored without pickle."""

from digitlab.shared.errors import UserError

import numpy as np
import pytest

from digitlab.files.arrays import load_arrays, save_arrays
from digitlab.images.mnist_look import to_model_input
from digitlab.images.nondigits import HAND_DRAWN, KINDS
from digitlab.images.strokes import HANDS_OF
from stages import preprocess
from tests.conftest import make_params


def test_model_input_is_float32_in_unit_range_with_a_channel_axis():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    scaled = to_model_input(images)
    assert scaled.dtype == np.float32 and scaled.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(scaled[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]])


def test_split_is_disjoint_complete_and_stratified():
    labels = np.repeat(np.arange(10), [100, 200, 50, 80, 120, 90, 60, 70, 110, 120])
    kept, held_out = preprocess.stratified_split(labels, 0.1, seed=3)
    assert np.intersect1d(kept, held_out).size == 0
    assert np.union1d(kept, held_out).tolist() == list(range(len(labels)))
    assert np.bincount(labels[held_out]).tolist() == [10, 20, 5, 8, 12, 9, 6, 7, 11, 12]


def test_split_depends_on_the_seed_only():
    labels = np.arange(1000) % 10
    first = preprocess.stratified_split(labels, 0.2, seed=1)
    again = preprocess.stratified_split(labels, 0.2, seed=1)
    other = preprocess.stratified_split(labels, 0.2, seed=2)
    assert np.array_equal(first[1], again[1]) and not np.array_equal(first[1], other[1])


def test_arrays_round_trip_without_pickle(tmp_path):
    save_arrays(tmp_path / "a.npz", images=np.zeros((2, 28, 28, 1), np.float32), labels=np.array([3, 4], np.uint8))
    loaded = load_arrays(tmp_path / "a.npz")
    assert loaded["labels"].tolist() == [3, 4] and loaded["images"].shape == (2, 28, 28, 1)


def test_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="not a readable .npz file"):
        load_arrays(tmp_path / "evil.npz")


def test_stage_writes_capped_stratified_splits(tiny_raw_dir, tmp_path, monkeypatch):
    params = make_params({"data": {"validation_fraction": 0.25, "split_seed": 0, "max_train_samples": 20}})
    monkeypatch.setattr(preprocess, "load_params", lambda: params)
    preprocess.main([str(tiny_raw_dir), str(tmp_path / "prepared")])
    train = load_arrays(tmp_path / "prepared" / "train.npz")
    val = load_arrays(tmp_path / "prepared" / "val.npz")
    test = load_arrays(tmp_path / "prepared" / "test.npz")
    assert (len(train["labels"]), len(val["labels"]), len(test["labels"])) == (10, 10, 20)
    assert sorted(val["labels"].tolist()) == list(range(10))  # one of each class
    assert train["images"].dtype == np.float32 and train["images"].max() <= 1.0
    assert test["labels"].tolist() == [i % 10 for i in range(20)]  # test untouched, in order


def test_every_class_lands_on_both_sides_even_when_tiny():
    labels = np.repeat(np.arange(10), 2)
    kept, held_out = preprocess.stratified_split(labels, 0.01, seed=0)
    assert sorted(labels[kept].tolist()) == sorted(labels[held_out].tolist()) == list(range(10))


def test_stage_writes_the_three_splits_of_non_digits(tiny_raw_dir, tmp_path, monkeypatch):
    params = make_params(
        {
            "data.max_train_samples": None,
            "data.validation_fraction": 0.5,  # 20 validation digits: more than the 11 user digits asked
            "reject.outlier_share": 0.5,
            "reject.val_nondigits": 14,
            "reject.test_nondigits": 21,
            "reject.val_user_digits": 11,
            "reject.test_user_digits": 17,
        }
    )
    monkeypatch.setattr(preprocess, "load_params", lambda: params)
    preprocess.main([str(tiny_raw_dir), str(tmp_path / "prepared")])
    train_digits = len(load_arrays(tmp_path / "prepared" / "train.npz")["labels"])
    made = {split: load_arrays(tmp_path / "prepared" / f"nondigits_{split}.npz") for split in ("train", "val", "test")}
    # Each split as many as asked, less the few the reader finds blank (and would answer "no digit found").
    for split, asked in (("train", round(0.5 * train_digits)), ("val", 14), ("test", 21)):
        assert asked - 2 <= len(made[split]["kinds"]) <= asked, split
        assert made[split]["images"].shape == (len(made[split]["kinds"]), 28, 28, 1)
        assert made[split]["images"].dtype == np.float32 and made[split]["images"].max() <= 1.0
    assert set(made["test"]["kinds"]) == set(KINDS)
    # The drawn ones in the test split's own hands, the others in none.
    drawn = np.isin(made["test"]["kinds"], list(HAND_DRAWN))
    assert set(made["test"]["hands"][drawn]) <= set(HANDS_OF["test"]) and set(made["test"]["hands"][~drawn]) == {""}
    # Digits as users send them, for validation and for the test: as many as asked, or all of the split's digits
    # where it has fewer.
    for split, asked in (("val", 11), ("test", 17)):
        digits = len(load_arrays(tmp_path / "prepared" / f"{split}.npz")["labels"])
        users = load_arrays(tmp_path / "prepared" / f"user_digits_{split}.npz")
        assert min(asked, digits) - 2 <= len(users["labels"]) <= min(asked, digits), split
        assert users["images"].shape[1:] == (28, 28, 1)
    assert not np.array_equal(made["val"]["images"][: 14 - 2], made["test"]["images"][: 14 - 2])  # seeds of their own
