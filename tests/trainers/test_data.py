import pandas as pd
import pytest

from peftsweep.errors import UserError
from peftsweep.trainers.classification import tokenize
from peftsweep.trainers.data import DataSpec, load_splits
from peftsweep.trainers.launch import prepare_data
from peftsweep.trainers.model import load_tokenizer
from tests.tiny import CLASSIFY


def write(tmp_path, frame, name="d.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def test_csv_with_string_labels_is_split_and_encoded(tiny_csv):
    splits, names, max_length = load_splits(DataSpec(train_file=tiny_csv, seed=3))
    assert names == ["fruit", "machine", "nature"]
    assert sum(len(s) for s in splits.values()) == 96
    assert max_length == 128
    assert {len(splits["validation"]), len(splits["test"])} <= {9, 10}
    assert set().union(*(set(s["label"]) for s in splits.values())) <= {0, 1, 2}


def test_tokenized_data_is_unpadded(tiny_model, tiny_csv):
    data = tokenize(DataSpec(train_file=tiny_csv, max_length=10), load_tokenizer(tiny_model))
    lengths = {len(ids) for ids in data.splits["train"].input_ids}
    assert max(lengths) == 10 and len(lengths) > 1  # truncated to max_length, not padded to it


def test_missing_column_names_the_setting(tmp_path):
    path = write(tmp_path, pd.DataFrame({"sentence": ["a b"] * 10, "label": [0, 1] * 5}))
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=path))
    assert "no column 'text'" in str(err.value) and "data.text_column" in str(err.value)


def test_label_set_must_match_num_labels(tiny_csv):
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=tiny_csv, num_labels=4))
    assert "data.num_labels is 4 but the data has 3 classes" in str(err.value)


def test_integer_labels_out_of_range(tmp_path):
    path = write(tmp_path, pd.DataFrame({"text": ["x y"] * 20, "label": [0, 1, 2, 7] * 5}))
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=path, num_labels=3))
    assert "must lie in 0..2, found [7]" in str(err.value)


def test_labels_unseen_in_training_are_rejected(tmp_path):
    train = write(tmp_path, pd.DataFrame({"text": ["a", "b"] * 5, "label": ["x", "y"] * 5}), "train.csv")
    test = write(tmp_path, pd.DataFrame({"text": ["c"], "label": ["z"]}), "test.csv")
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=train, test_file=test))
    assert "['z'] appear outside the training split" in str(err.value)


def test_missing_file_and_missing_model_are_user_errors(tmp_path, tiny_model):
    with pytest.raises(UserError, match="file not found"):
        load_splits(DataSpec(train_file=str(tmp_path / "nope.csv")))
    with pytest.raises(UserError, match="directory not found"):
        prepare_data(str(tmp_path / "no-model"), DataSpec(train_file=str(tmp_path / "nope.csv")), task=CLASSIFY)


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of"):
        DataSpec(preset="trec6", train_file="x.csv")


def test_trec6_preset_uses_the_official_test_split():
    splits, names, max_length = load_splits(DataSpec(preset="trec6", train_size=800, validation_size=500))
    assert names == ["DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC"]
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (800, 500, 500)
    assert max_length == 32


def test_rotten_tomatoes_preset_is_binary():
    splits, names, max_length = load_splits(DataSpec(preset="rotten_tomatoes", test_size=200))
    assert names == ["rotten", "fresh"] and len(splits["test"]) == 200
    assert set(splits["train"]["label"]) == {0, 1}


BROKEN_FILES = {  # name: (bytes, what the message says)
    "random.csv": (bytes(range(256)) * 8, "cannot be read as CSV"),
    "header-only.csv": (b"text,label\n", "no rows"),
    "empty.jsonl": (b"", "no rows"),
    "open-quote.csv": (b'text,label\n"never closed,1\n', "cannot be read as CSV"),
    "utf16.csv": ("text,label\nhello,a\n".encode("utf-16"), "cannot be read as CSV"),
    "not-json.jsonl": (b"{this is not json\n", "cannot be read as JSONL"),
    "garbage.parquet": (b"PAR1 not really", "cannot be read as PARQUET"),
}


@pytest.mark.parametrize("name", BROKEN_FILES)
def test_a_file_that_is_not_what_its_name_says_is_a_user_error(tmp_path, name, capfd):
    content, expected = BROKEN_FILES[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=str(path)))
    assert f"data.train_file: {path}: {expected}" in str(err.value), str(err.value)
    printed = "".join(capfd.readouterr())
    assert str(path) not in printed, printed  # our message says it once; no library's own line about the file


def test_a_folder_given_as_a_data_file_is_named_under_its_key(tmp_path, tiny_csv):
    with pytest.raises(UserError) as err:
        load_splits(DataSpec(train_file=tiny_csv, validation_file=str(tmp_path)))
    assert f"data.validation_file: {tmp_path} is a folder, not a data file" in str(err.value), str(err.value)


def test_a_real_data_problem_is_named_even_on_a_file_too_small_to_split(tmp_path):
    """Three rows: the carved validation split is empty, and the data problem is reported with it, not hidden."""
    one_class = tmp_path / "one-class.csv"
    one_class.write_text("text,label\na,x\nb,x\nc,x\n")
    fractional = tmp_path / "fractional.csv"
    fractional.write_text("text,label\na,0.5\nb,1\nc,0\n")
    nested = tmp_path / "nested.jsonl"
    nested.write_text('{"text": "a", "label": 0}\n{"text": ["b", "c"], "label": 1}\n{"text": "d", "label": 0}\n')
    for path, expected in ((one_class, "need at least 2 classes, found ['x'] in all of the data"),
                           (fractional, "numeric labels must be whole class numbers (0, 1, ...), found [0.5]"),
                           (nested, "column 'text' (train split): row 2 holds a")):
        with pytest.raises(UserError) as err:
            load_splits(DataSpec(train_file=str(path)))
        assert expected in str(err.value), str(err.value)
        assert "split is empty" in str(err.value)  # both problems, at once


def test_whole_float_labels_are_class_numbers(tmp_path):
    path = tmp_path / "floats.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{float(i % 2)}\n" for i in range(40)))
    splits, names, _ = load_splits(DataSpec(train_file=str(path)))
    assert names == ["0", "1"] and set(splits["train"]["label"]) == {0, 1}


def test_label_column_and_the_carved_fractions_take_effect(tmp_path):
    """data.label_column names the label's column (the text column's other name is data.text_column);
    data.validation_fraction and data.test_fraction set the carved splits' sizes."""
    frame = pd.DataFrame({"sentence": [f"words {i}" for i in range(200)],
                          "label": ["wrong"] * 200,  # a column named like the default, not the one chosen
                          "category": [["x", "y"][i % 2] for i in range(200)]})
    path = write(tmp_path, frame)
    splits, names, _ = load_splits(DataSpec(train_file=path, text_column="sentence", label_column="category",
                                            validation_fraction=0.25, test_fraction=0.1, seed=0))
    assert names == ["x", "y"]
    assert (len(splits["test"]), len(splits["validation"]), len(splits["train"])) == (20, 45, 135)
    default, _, _ = load_splits(DataSpec(train_file=path, text_column="sentence", label_column="category", seed=0))
    assert (len(default["test"]), len(default["validation"])) == (20, 18)  # 0.1 of 200, then 0.1 of 180
