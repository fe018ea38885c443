"""service.uploads: every upload is checked before anything is decoded or stored."""
from __future__ import annotations

import io
import tempfile
import zipfile

import numpy as np
import pytest

from service import uploads
from service.uploads import UploadError, UploadLimits, UploadTooLarge, infer_task, parse_upload
from tests.utils.uploads import (
    classification_arrays, forged_npy, npy_bytes, npz_bytes, regression_arrays, zip_bytes,
)

LIMITS = UploadLimits(max_bytes=20_000_000, max_rows=10_000)


def parse(data: bytes, filename: str = "data.npz", limits: UploadLimits = LIMITS, **kwargs):
    spooled = tempfile.SpooledTemporaryFile(max_size=1024)  # what FastAPI hands over
    spooled.write(data)
    return parse_upload(spooled, filename=filename, limits=limits, **kwargs)


def rejects(data: bytes, match: str, *, error=UploadError, **kwargs) -> UploadError:
    with pytest.raises(error, match=match) as caught:
        parse(data, **kwargs)
    return caught.value


# ---------------------------------------------------------------- .npz accepted


def test_npz_classification_with_integer_labels():
    arrays = classification_arrays(rows=30, features=4, classes=3)
    parsed = parse(npz_bytes(**arrays))
    info = parsed.info
    assert (info.rows, info.features, info.task, info.classes) == (30, 4, "classification", [0, 1, 2])
    assert info.has_validation is False and info.val_rows == 0
    assert parsed.arrays["X"].dtype == np.float32
    np.testing.assert_allclose(parsed.arrays["X"], arrays["X"].astype(np.float32))
    assert parsed.arrays["y"].dtype == np.int64
    np.testing.assert_array_equal(parsed.arrays["y"], arrays["y"])


def test_npz_regression_with_float_targets():
    arrays = regression_arrays(rows=25, features=2)
    parsed = parse(npz_bytes(compressed=True, **arrays))
    assert (parsed.info.task, parsed.info.classes, parsed.info.outputs) == ("regression", [], 1)
    assert parsed.arrays["y"].dtype == np.float32


def test_npz_string_labels_are_sorted_classes():
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.array(["setosa", "virginica", "versicolor", "setosa", "virginica", "versicolor"])
    parsed = parse(npz_bytes(X=X, y=y))
    assert parsed.info.classes == ["setosa", "versicolor", "virginica"]
    assert parsed.arrays["y"].dtype.kind == "U"


def test_npz_bool_labels_become_integers():
    parsed = parse(npz_bytes(X=np.eye(4), y=np.array([True, False, True, False])))
    assert parsed.info.classes == [0, 1]
    assert parsed.arrays["y"].dtype == np.int64


def test_npz_whole_float_labels_are_classes_unless_task_says_regression():
    X = np.random.default_rng(0).normal(size=(8, 2))
    y = np.array([0.0, 1.0, 2.0, 1.0, 0.0, 2.0, 1.0, 0.0])
    assert parse(npz_bytes(X=X, y=y)).info.classes == [0, 1, 2]
    parsed = parse(npz_bytes(X=X, y=y), task="regression")
    assert parsed.info.task == "regression" and parsed.arrays["y"].dtype == np.float32


def test_npz_validation_arrays():
    train, val = classification_arrays(rows=20, seed=1), classification_arrays(rows=9, seed=2)
    parsed = parse(npz_bytes(X=train["X"], y=train["y"], X_val=val["X"], y_val=val["y"]))
    assert parsed.info.has_validation and parsed.info.val_rows == 9
    assert set(parsed.arrays) == {"X", "y", "X_val", "y_val"}
    assert parsed.arrays["X_val"].dtype == np.float32


def test_npz_one_hot_and_multi_output_targets():
    X = np.random.default_rng(0).normal(size=(6, 3))
    one_hot = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    parsed = parse(npz_bytes(X=X, y=one_hot))
    assert (parsed.info.task, parsed.info.classes) == ("classification", [0, 1, 2])
    multi = X[:, :2] * 0.5
    parsed = parse(npz_bytes(X=X, y=multi))
    assert (parsed.info.task, parsed.info.outputs) == ("regression", 2)
    assert parsed.arrays["y"].shape == (6, 2)


def test_npz_column_target_is_flattened():
    arrays = regression_arrays(rows=10)
    parsed = parse(npz_bytes(X=arrays["X"], y=arrays["y"][:, None]))
    assert parsed.arrays["y"].shape == (10,) and parsed.info.outputs == 1


# ---------------------------------------------------------------- .npz rejected


def test_not_a_zip():
    rejects(b"this is not an archive", "not a valid .npz")


@pytest.mark.parametrize("member", ["evil.npy", "../X.npy", "data/X.npy", "X"])
def test_unexpected_members(member):
    good = classification_arrays()
    data = zip_bytes({"X.npy": npy_bytes(good["X"]), "y.npy": npy_bytes(good["y"]), member: b"x"})
    rejects(data, "unexpected members")


def test_missing_y():
    rejects(zip_bytes({"X.npy": npy_bytes(np.eye(3))}), "^y: missing")


def test_validation_arrays_come_together():
    good = classification_arrays()
    rejects(npz_bytes(X_val=good["X"], **good), "X_val and y_val come together")


def test_object_array_is_rejected_by_its_header():
    labels = np.array([{"a": 1}, None, "x", 3], dtype=object)
    data = zip_bytes({"X.npy": npy_bytes(np.eye(4)), "y.npy": npy_bytes(labels)})
    rejects(data, "^y: object arrays are not accepted")


@pytest.mark.parametrize("X, match", [
    (np.array([["a", "b"], ["c", "d"]]), "must hold numbers"),
    (np.ones((3, 2), dtype=np.complex64), "must hold numbers"),
    (np.ones(5), "must be 2-D"),
])
def test_bad_features(X, match):
    data = zip_bytes({"X.npy": npy_bytes(X), "y.npy": npy_bytes(np.arange(len(X)) % 2)})
    rejects(data, f"^X: .*{match}")


def test_structured_dtype():
    X = np.zeros(4, dtype=[("a", "<f8"), ("b", "<f8")])
    rejects(zip_bytes({"X.npy": npy_bytes(X), "y.npy": npy_bytes(np.arange(4) % 2)}), "structured")


def test_forged_header_is_caught_before_allocating():
    # declares 8 TB of float64; a loader that trusted it would try to allocate it
    data = zip_bytes({"X.npy": forged_npy((1_000_000, 1_000_000)), "y.npy": npy_bytes(np.arange(2))})
    rejects(data, "^X: .*exceed the cap", error=UploadTooLarge)
    data = zip_bytes({"X.npy": forged_npy((100, 100)), "y.npy": npy_bytes(np.arange(2))})
    rejects(data, r"^X: the header declares shape \(100, 100\)")


def test_header_shape_larger_than_data_even_within_caps():
    honest = npy_bytes(np.ones((4, 2)))
    truncated = honest[:-8]  # one float short
    rejects(zip_bytes({"X.npy": truncated, "y.npy": npy_bytes(np.arange(4) % 2)}), "declares shape")


def test_zip_bomb_compression_ratio():
    zeros = np.zeros((2_000, 500))  # 8 MB of zeros deflates about 1000:1
    data = zip_bytes({"X.npy": npy_bytes(zeros), "y.npy": npy_bytes(np.arange(2_000) % 2)},
                     compression=zipfile.ZIP_DEFLATED)
    assert len(data) < 100_000
    rejects(data, r"^X: compression ratio \d+:1 exceeds 100:1")


def test_uncompressed_size_cap():
    arrays = classification_arrays(rows=500, features=20)
    data = npz_bytes(compressed=True, **arrays)
    small = UploadLimits(max_bytes=len(data) + 1000, max_rows=10_000)
    rejects(data, "uncompressed", error=UploadTooLarge, limits=small)


def test_corrupted_member_data():
    data = bytearray(npz_bytes(**classification_arrays(rows=50)))
    at = data.index(b"X.npy") + 400  # inside X's stored data, past its header
    data[at] ^= 0xFF
    rejects(bytes(data), "could not read the arrays|not a valid")


def test_nan_in_features_names_the_row():
    X = np.ones((5, 3))
    X[3, 1] = np.nan
    rejects(npz_bytes(X=X, y=np.arange(5) % 2), "^X: row 3, column 1")


def test_float64_beyond_float32_range():
    X = np.ones((4, 2))
    X[1, 0] = 1e300
    rejects(npz_bytes(X=X, y=np.arange(4) % 2), "^X: row 1, column 0.*float32")


def test_nan_in_regression_target():
    arrays = regression_arrays(rows=6)
    arrays["y"][4] = np.inf
    rejects(npz_bytes(**arrays), "^y: row 4 is not finite")


def test_row_mismatch_and_minimum_rows():
    rejects(npz_bytes(X=np.eye(4), y=np.arange(3)), "^y: has 3 rows; X has 4")
    rejects(npz_bytes(X=np.ones((1, 2)), y=np.arange(1)), "^X: needs at least 2 rows")


def test_row_cap():
    arrays = classification_arrays(rows=50)
    rejects(npz_bytes(**arrays), "^X: 50 rows exceed the cap of 40", error=UploadTooLarge,
            limits=UploadLimits(max_bytes=10**7, max_rows=40))
    # the cap counts validation rows too
    rejects(npz_bytes(X_val=arrays["X"][:5], y_val=arrays["y"][:5], **arrays), "55 rows in all",
            error=UploadTooLarge, limits=UploadLimits(max_bytes=10**7, max_rows=54))


def test_single_class_and_class_cap():
    rejects(npz_bytes(X=np.eye(4), y=np.zeros(4, dtype=int)), "only one class")
    arrays = classification_arrays(rows=30, classes=10)
    rejects(npz_bytes(**arrays), "10 classes exceed the cap of 5",
            limits=UploadLimits(max_bytes=10**7, max_rows=100, max_classes=5))


def test_validation_mismatches():
    train = classification_arrays(rows=20, features=4, classes=3)
    rejects(npz_bytes(X_val=np.ones((3, 5)), y_val=np.arange(3), **train), "^X_val: has 5 features; X has 4")
    rejects(npz_bytes(X_val=np.ones((3, 4)), y_val=np.array([0, 1, 7]), **train), r"^y_val: labels not in y: \[7\]")
    rejects(npz_bytes(X_val=np.ones((3, 4)), y_val=np.array(["a", "b", "c"]), **train), "same kind")


def test_two_dimensional_integer_target_must_be_one_hot():
    rejects(npz_bytes(X=np.eye(3), y=np.array([[1, 2], [0, 0], [3, 1]])), "one-hot", task="classification")


def test_classification_override_needs_whole_labels():
    arrays = regression_arrays(rows=6)
    rejects(npz_bytes(**arrays), "not a whole number", task="classification")


# ---------------------------------------------------------------- file level


def test_file_size_cap_and_empty_file():
    data = npz_bytes(**classification_arrays())
    rejects(data, "exceed the upload cap", error=UploadTooLarge,
            limits=UploadLimits(max_bytes=len(data) - 1, max_rows=100))
    rejects(b"", "empty")


def test_file_name_decides_the_format():
    rejects(b"a,b\n1,2\n", "expected a .npz or .csv", filename="data.txt")
    rejects(b"a,b\n1,2\n", "expected a .npz or .csv", filename=None)


def test_target_field_rules():
    error = rejects(npz_bytes(**classification_arrays()), "only .csv uploads", target="y")
    assert error.field == "target"
    error = rejects(b"a,b\n1,2\n3,4\n", "required for .csv", filename="d.csv")
    assert error.field == "target"


# ---------------------------------------------------------------- .csv


def csv_parse(text: str, target: str = "label", **kwargs):
    return parse(text.encode(), filename="data.csv", target=target, **kwargs)


def csv_rejects(text: str, match: str, target: str = "label", **kwargs) -> UploadError:
    with pytest.raises(UploadError, match=match) as caught:
        csv_parse(text, target=target, **kwargs)
    return caught.value


def test_csv_string_labels_with_the_target_in_the_middle():
    parsed = csv_parse("a,label,b\n1,cat,2\n3,dog,4\n5.5,cat,-6e-1\n")
    np.testing.assert_array_equal(parsed.arrays["X"], np.array([[1, 2], [3, 4], [5.5, -0.6]], dtype=np.float32))
    assert parsed.arrays["X"].dtype == np.float32
    assert parsed.info.classes == ["cat", "dog"] and parsed.info.features == 2


def test_csv_integer_labels_regression_targets_crlf_bom_quotes_and_blank_lines():
    parsed = csv_parse('\ufeffx,"y",label\r\n1,2,0\r\n\r\n"3",4,1\r\n5,6,2\r\n')
    assert parsed.info.classes == [0, 1, 2] and parsed.info.rows == 3
    parsed = csv_parse("x,label\n1,0.5\n2,1.25\n3,-2\n")
    assert parsed.info.task == "regression"
    np.testing.assert_allclose(parsed.arrays["y"], [0.5, 1.25, -2.0])


def test_csv_target_must_name_a_column():
    error = csv_rejects("a,b\n1,2\n3,4\n", r"target: no column named 'label'; the header has \['a', 'b'\]")
    assert error.field == "target"


def test_csv_header_required():
    csv_rejects("1,2,3\n4,5,6\n", "line 1: a header line naming the columns is required", target="1")
    csv_rejects("", "empty")  # via the file-level check
    csv_rejects("a,label\n", "no data rows")
    csv_rejects("a,a,label\n1,2,3\n", r"line 1: duplicate column names \['a'\]")
    csv_rejects("a,,label\n1,2,3\n", "line 1: column 2 of the header has no name")
    csv_rejects("label\n1\n2\n", "line 1: at least one feature column")


def test_csv_ragged_row_names_its_line():
    csv_rejects("a,b,label\n1,2,0\n3,4,1\n5,6\n", "^line 4: expected 3 fields as in the header, found 2")
    csv_rejects("a,b,label\n1,2,0,9\n", "^line 2: expected 3 fields")


def test_csv_non_numeric_and_empty_values_name_line_and_column():
    csv_rejects("a,b,label\n1,2,0\n3,abc,1\n", "^line 3: column 'b': 'abc' is not a number")
    csv_rejects("a,b,label\n1,2,0\n3,,1\n", "^line 3: column 'b': an empty value is not a number")


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e999"])
def test_csv_non_finite_values(value):
    csv_rejects(f"a,b,label\n1,2,0\n3,4,1\n5,{value},0\n", f"^line 4: column 'b': '{value}' is not finite")


def test_csv_target_errors():
    csv_rejects("a,label\n1,0\n2,\n", "^line 3: the target column 'label' is empty")
    csv_rejects("a,label\n1,0.5\n2,inf\n", "^line 3: column 'label': 'inf' is not finite")


def test_csv_line_numbers_count_physical_lines():
    # a quoted label spanning two lines moves every later line number by one
    text = 'a,label\n1,"two\nlines"\n2,other\n3,x\nbad,y\n'
    csv_rejects(text, "^line 6: column 'a'")


def test_csv_line_numbers_across_chunks(monkeypatch):
    monkeypatch.setattr(uploads, "CSV_CHUNK_ROWS", 3)
    rows = "".join(f"{i},{i % 2}\n" for i in range(10))
    csv_rejects(f"a,label\n{rows}oops,1\n", "^line 12: column 'a': 'oops'")
    parsed = csv_parse(f"a,label\n{rows}")
    np.testing.assert_array_equal(parsed.arrays["X"][:, 0], np.arange(10, dtype=np.float32))


def test_csv_not_utf8():
    with pytest.raises(UploadError, match="^line 3: not UTF-8"):
        parse(b"a,label\n1,0\n\xff\xfe,1\n", filename="d.csv", target="label")


def test_csv_row_cap():
    rows = "".join(f"{i},{i % 2}\n" for i in range(6))
    with pytest.raises(UploadTooLarge, match="^line 7: more than 5 rows"):
        csv_parse(f"a,label\n{rows}", limits=UploadLimits(max_bytes=10**6, max_rows=5))


def test_csv_overlong_field():
    csv_rejects("a,label\n1,0\n" + "2," + "x" * 200_000 + "\n", "^line 3: field larger than field limit")


# ---------------------------------------------------------------- infer_task


def test_infer_task_floats_with_fractions_are_regression():
    task, classes, y, _ = infer_task(np.array([0.0, 1.0, 1.5]), None, LIMITS)
    assert (task, classes, y.dtype) == ("regression", [], np.float32)


def test_infer_task_too_many_whole_values_is_regression():
    y = np.arange(2_000, dtype=np.float64)
    assert infer_task(y, None, LIMITS)[0] == "regression"
    with pytest.raises(UploadError, match="2000 classes exceed"):
        infer_task(y.astype(np.int64), None, LIMITS)


def test_infer_task_regression_override_refuses_strings():
    with pytest.raises(UploadError, match="regression needs numeric"):
        infer_task(np.array(["a", "b"]), None, LIMITS, task="regression")
