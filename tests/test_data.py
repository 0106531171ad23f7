"""The loader on every supported format, the missing-value policies and unusable columns."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from anomaly import data
from anomaly.errors import DataError, NotFound

ROWS = [(1.0, 10.0, 100.0), (2.0, 20.0, 200.0), (3.0, 30.0, 300.0), (4.0, 40.0, 400.0), (5.0, 50.0, 100.0)]
EXPECTED = np.array(ROWS, np.float32)


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def lines(delim: str, header: bool) -> str:
    out = [delim.join(["a", "b", "c"])] if header else []
    out += [delim.join(f"{v:g}" for v in row) for row in ROWS]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("delim,name", [(",", "comma"), ("\t", "tab"), (";", "semicolon"), ("   ", "whitespace")])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_delimiters_with_and_without_header(tmp_path, delim, name, header, suffix):
    f = write(tmp_path / f"d{suffix}", lines(delim, header))
    fmt = data.sniff(f)
    assert fmt.delimiter == ("whitespace" if name == "whitespace" else delim)
    assert fmt.has_header is header
    table = data.read_table(f)
    assert table.features == (["a", "b", "c"] if header else ["col_0", "col_1", "col_2"])
    np.testing.assert_array_equal(table.X, EXPECTED)
    assert table.X.dtype == np.float64  # float64: values beyond float32 stay huge, never become inf


def test_whitespace_mixed_spaces_and_tabs(tmp_path):
    body = "a b\tc\n" + "".join(f"{r[0]:g}  {r[1]:g}\t {r[2]:g}\n" for r in ROWS)
    table = data.read_table(write(tmp_path / "mixed.txt", body))
    assert table.features == ["a", "b", "c"]
    np.testing.assert_array_equal(table.X, EXPECTED)


def test_utf8_bom_is_not_part_of_the_first_name(tmp_path):
    f = write(tmp_path / "bom.csv", "\ufeff" + lines(",", True))
    assert data.sniff(f).bom
    table = data.read_table(f)
    assert table.features == ["a", "b", "c"]
    np.testing.assert_array_equal(table.X, EXPECTED)


def test_utf8_bom_without_header(tmp_path):
    f = write(tmp_path / "bom.txt", "\ufeff" + lines(";", False))
    table = data.read_table(f)
    np.testing.assert_array_equal(table.X, EXPECTED)


@pytest.mark.parametrize("bom", [False, True])
def test_gzip(tmp_path, bom):
    f = tmp_path / "data.csv.gz"
    f.write_bytes(gzip.compress((("\ufeff" if bom else "") + lines(",", True)).encode()))
    assert data.sniff(f).compression == "gzip"
    table = data.read_table(f)
    assert table.features == ["a", "b", "c"]
    np.testing.assert_array_equal(table.X, EXPECTED)


def test_non_numeric_columns_are_carried_not_features(tmp_path):
    body = "timestamp,id,host,a,b\n" + "".join(
        f"2026-01-01 00:0{i}:00,{i},srv-{i % 2},{r[0]:g},{r[1]:g}\n" for i, r in enumerate(ROWS))
    table = data.read_table(write(tmp_path / "mixed.csv", body))
    assert table.features == ["a", "b"]  # numeric `id` is an identifier, not a measurement
    np.testing.assert_array_equal(table.X, EXPECTED[:, :2])
    assert set(table.report["ignored_columns"]) == {"timestamp", "id", "host"}
    assert table.time_column == "timestamp"
    assert list(table.frame["host"]) == ["srv-0", "srv-1", "srv-0", "srv-1", "srv-0"]
    assert list(table.frame["timestamp"])[2] == "2026-01-01 00:02:00"


def test_columns_selects_features(tmp_path):
    f = write(tmp_path / "d.csv", lines(",", True))
    table = data.read_table(f, columns=["c", "a"])
    assert table.features == ["c", "a"]
    np.testing.assert_array_equal(table.X, EXPECTED[:, [2, 0]])


@pytest.mark.parametrize("columns,fragment", [(["a", "zzz"], "zzz"), (["a", "name"], "not numeric")])
def test_columns_unknown_or_text_is_an_error(tmp_path, columns, fragment):
    body = "a,b,name\n" + "".join(f"{r[0]:g},{r[1]:g},x{i}\n" for i, r in enumerate(ROWS))
    with pytest.raises(DataError, match=fragment):
        data.read_table(write(tmp_path / "d.csv", body), columns=columns)


def test_label_column_is_never_a_feature(tmp_path):
    body = "a,b,label\n" + "".join(f"{r[0]:g},{r[1]:g},{i % 2}\n" for i, r in enumerate(ROWS))
    f = write(tmp_path / "d.csv", body)
    table = data.read_table(f)
    assert table.features == ["a", "b"]
    assert table.labels.tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(DataError, match="label"):
        data.read_table(f, columns=["a", "label"])


def test_custom_label_column_is_never_a_feature(tmp_path):
    # 0, 1, 2, ...: not a 0/1 indicator column (those are left out of the features anyway), so the first
    # assertion still tests that only the name decides whether a column is a label
    body = "a,b,truth\n" + "".join(f"{r[0]:g},{r[1]:g},{i % 3}\n" for i, r in enumerate(ROWS))
    f = write(tmp_path / "d.csv", body)
    assert data.read_table(f).features == ["a", "b", "truth"]  # not named like a label: a feature
    table = data.read_table(f, label_column="truth")
    assert table.features == ["a", "b"]
    assert table.labels.tolist() == [0, 1, 1, 0, 1]  # any value above 0 is an anomaly


GAPPY = "a,b\n,10\n2,\n,30\n4,40\n5,\n"  # a: edge gap at the start, inner gap; b: inner gap, edge gap at the end


def test_missing_interpolate_inside_fill_edges_and_count(tmp_path):
    table = data.read_table(write(tmp_path / "gaps.csv", GAPPY))
    np.testing.assert_allclose(table.X, [[2, 10], [2, 20], [3, 30], [4, 40], [5, 40]])
    assert table.report["missing_values"] == 4
    assert table.report["values_filled"] == 4
    assert table.report["missing_by_column"] == {"a": 2, "b": 2}
    assert len(table.frame) == 5 and table.row_mask is None


def test_missing_drop(tmp_path):
    table = data.read_table(write(tmp_path / "gaps.csv", GAPPY), missing="drop")
    np.testing.assert_array_equal(table.X, [[4, 40]])
    assert table.report["rows_dropped"] == 4
    assert table.row_mask.tolist() == [False, False, False, True, False]


def test_missing_error_names_column_and_row(tmp_path):
    with pytest.raises(DataError, match=r"a: 2.*first at row 0"):
        data.read_table(write(tmp_path / "gaps.csv", GAPPY), missing="error")


@pytest.mark.parametrize("token", ["nan", "NaN", "NA", ""])
def test_nan_tokens_are_missing(tmp_path, token):
    f = write(tmp_path / "nan.csv", f"a,b\n1,10\n{token},20\n3,30\n4,40\n")
    table = data.read_table(f)
    np.testing.assert_allclose(table.X[:, 0], [1, 2, 3, 4])
    assert table.report["missing_values"] == 1
    with pytest.raises(DataError, match="missing values"):
        data.read_table(f, missing="error")


@pytest.mark.parametrize("token", ["inf", "-inf", "Infinity", "1e308", "-1e39"])
def test_inf_and_huge_tokens_are_values_not_missing(tmp_path, token):
    # beyond float32 or infinite: a huge value (the strongest anomaly at detection), never a gap to fill
    f = write(tmp_path / "inf.csv", f"a,b\n1,10\n{token},20\n3,30\n4,40\n")
    table = data.read_table(f, missing="error")
    assert table.X[1, 0] == float(token) and table.report["missing_values"] == 0


def test_empty_and_constant_columns_are_reported_and_not_used(tmp_path):
    body = "a,empty,const,b\n" + "".join(f"{r[0]:g},,7,{r[1]:g}\n" for r in ROWS)
    table = data.read_table(write(tmp_path / "d.csv", body))
    assert table.features == ["a", "b"]
    assert table.report["empty_columns"] == ["empty"]
    assert table.report["constant_columns"] == ["const"]
    np.testing.assert_array_equal(table.X, EXPECTED[:, :2])


def test_keep_constant_keeps_a_constant_column(tmp_path):
    body = "a,const\n" + "".join(f"{r[0]:g},7\n" for r in ROWS)
    table = data.read_table(write(tmp_path / "d.csv", body), drop_constant=False)
    assert table.features == ["a", "const"]
    assert table.report["constant_columns"] == ["const"]


def test_only_constant_columns_are_kept(tmp_path):
    table = data.read_table(write(tmp_path / "d.csv", "a,b\n1,2\n1,2\n1,2\n"))
    assert table.features == ["a", "b"] and table.report["constant_columns_kept"]


def test_only_empty_columns_is_an_error(tmp_path):
    with pytest.raises(DataError, match="empty"):
        data.read_table(write(tmp_path / "d.csv", "a,b\n,\n,\n,\n"))


def _long_file(tmp_path, bad_row: int, token: str = "oops", n: int = 3000):
    values = np.arange(n, dtype=np.float64)
    rows = [f"{i},{v:g},{2 * v:g}" for i, v in enumerate(values)]
    rows[bad_row] = f"{bad_row},{token},{2 * values[bad_row]:g}"
    return write(tmp_path / "long.csv", "id,a,b\n" + "\n".join(rows) + "\n")


def test_stray_word_beyond_the_probe_rows_becomes_missing(tmp_path):
    f = _long_file(tmp_path, bad_row=2500)
    table = data.read_table(f)
    assert table.features == ["a", "b"]  # `a` is still a feature, not demoted to text
    assert table.report["missing_values"] == 1
    assert table.X[2500, 0] == 2500.0  # interpolated between 2499 and 2501
    assert len(table.X) == 3000
    with pytest.raises(DataError, match=r"a: 1.*row 2500"):
        data.read_table(f, missing="error")


def test_stray_word_in_chunked_reading(tmp_path):
    f = _long_file(tmp_path, bad_row=2500)
    fmt = data.sniff(f)
    blocks = list(data.iter_blocks(f, fmt, ["a", "b"], block_bytes=4096))
    assert len(blocks) > 3
    frame_a = np.concatenate([b.frame["a"].to_numpy() for b in blocks])
    assert len(frame_a) == 3000 and np.isnan(frame_a[2500]) and np.isnan(frame_a).sum() == 1
    assert [b.start for b in blocks] == list(np.cumsum([0] + [len(b.raw_lines) for b in blocks[:-1]]))


def test_iter_blocks_matches_read_table(tmp_path):
    body = "\ufefftimestamp;a;b\r\n" + "".join(f"t{i};{i * 0.5:g};{i % 7:g}\r\n" for i in range(500))
    f = write(tmp_path / "crlf.csv", body)
    fmt = data.sniff(f)
    table = data.read_table(f)
    blocks = list(data.iter_blocks(f, fmt, ["a", "b"], block_bytes=997))
    X = np.concatenate([b.frame[["a", "b"]].to_numpy(np.float32) for b in blocks])
    np.testing.assert_array_equal(X, table.X)
    raw = [ln for b in blocks for ln in b.raw_lines]
    assert raw[0] == b"t0;0;0" and raw[-1] == b"t499;249.5;2" and len(raw) == 500


def test_line_texts_match_the_parsed_column(tmp_path):
    """Detection reads the time column from the raw lines, only for the rows it names: the values must be the
    block parser's (quotes removed, an empty cell NaN, a quoted line break kept, CRLF lines)."""
    rows = ['2026-01-01 00:00,1,2', '"2026-01-01 00:01",3,4', ',5,6', '"two\r\nlines",7,8', 'NA,9,10', ' x ,11,12']
    f = write(tmp_path / "t.csv", "time,a,b\r\n" + "\r\n".join(rows) + "\r\n")
    fmt = data.sniff(f)
    whole = [v for b in data.iter_blocks(f, fmt, ["a", "b"], text_cols=["time"]) for v in b.text("time")]
    for size in (23, 1 << 20):  # a quoted line break inside a block, and alone in one
        blocks = list(data.iter_blocks(f, fmt, ["a", "b"], all_columns=False, block_bytes=size,
                                       lazy_text_cols=["time"]))
        lazy = [b.text("time") for b in blocks]
        one_by_one = [t[i] for t in lazy for i in range(len(t))]
        at_once = [v for t in lazy for v in np.asarray(t)]
        assert len(whole) == len(rows)
        for values in (one_by_one, at_once):
            assert [str(v) for v in values] == [str(v) for v in whole]
    assert whole[0] == "2026-01-01 00:00" and whole[1] == "2026-01-01 00:01" and isinstance(whole[2], float)


def test_prefetch_hands_on_errors_and_stops(tmp_path):
    def items():
        yield 1
        raise DataError("bad block")

    with pytest.raises(DataError, match="bad block"):
        list(data.Prefetch(items()))
    ahead = data.Prefetch(iter(range(10**6)), depth=2)  # a consumer that stops early leaves no thread behind
    assert next(iter(ahead)) == 0
    ahead.close()


# --- bad input: one clear DataError / NotFound -----------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(NotFound, match="not found"):
        data.read_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("body,fragment", [
    ("", "empty"),
    ("\n\n  \n", "no data"),
    ("a,b,c\n", "no data rows"),
    ("name,host\nx,y\nz,w\n", "no numeric column"),
    ("a,b\n1,2\n3,4,5,6\n5,6\n", "malformed"),
])
def test_bad_files(tmp_path, body, fragment):
    with pytest.raises(DataError, match=fragment):
        data.read_table(write(tmp_path / "bad.csv", body))


def test_not_utf8(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("caf\u00e9,b\n1,2\n3,4\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        data.read_table(f)


def test_unknown_missing_policy(tmp_path):
    with pytest.raises(DataError, match="policy"):
        data.read_table(write(tmp_path / "gaps.csv", GAPPY), missing="guess")


def test_stray_word_within_the_probe_rows_becomes_missing(tmp_path):
    f = _long_file(tmp_path, bad_row=5, token="error", n=300)
    table = data.read_table(f)
    assert table.features == ["a", "b"]  # one word does not turn a sensor column into text
    assert table.report["missing_by_column"] == {"a": 1}
    assert table.X[5, 0] == 5.0
    with pytest.raises(DataError, match=r"a: 1; first at row 5\)"):
        data.read_table(f, missing="error")


def test_a_column_of_words_is_text_not_numbers(tmp_path):
    words = ["ok", "warn", "3", "ok", "fail"] * 10  # mostly words, one number now and then
    body = "status,a\n" + "".join(f"{w},{i}\n" for i, w in enumerate(words))
    table = data.read_table(write(tmp_path / "d.csv", body))
    assert table.features == ["a"] and table.report["ignored_columns"] == ["status"]
