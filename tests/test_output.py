"""Result files: CSV keeps every input line and column byte for byte (any delimiter, BOM, gzip, quotes, no
header), JSON and JSON Lines are valid JSON, and a failed run never leaves or damages a result file."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from anomaly import service
from anomaly.data import CsvFormat
from anomaly.errors import DataError
from anomaly.output import ResultWriter, format_scientific


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (not JSON, though Python's json accepts them)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in output"))


def detect(trained, path, **kwargs):
    return service.detect(str(path), version=trained["version"], store=trained["store"], max_results=None, **kwargs)


@pytest.fixture(scope="module")
def rows(dataset):
    return dataset["test_frame"].iloc[:120].reset_index(drop=True)


def _data_lines(path) -> list[bytes]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    return [ln.rstrip(b"\r") for ln in raw.split(b"\n") if ln.strip()]


@pytest.mark.parametrize("variant", ["comma", "quoted-text", "tab-txt-headerless", "semicolon-bom-crlf", "gzip",
                                     "whitespace-txt"])
def test_csv_output_passes_every_input_line_through(trained, rows, tmp_path, variant):
    frame = rows.copy()
    if variant == "quoted-text":
        frame.insert(1, "note", [f"host {i}, rack \"{i % 3}\"" for i in range(len(frame))])
    if variant == "whitespace-txt":
        frame = frame.drop(columns=["timestamp"])
    sep, header, name, kwargs = {
        "comma": (",", True, "in.csv", {}),
        "quoted-text": (",", True, "in.csv", {}),
        "tab-txt-headerless": ("\t", False, "in.txt", {}),
        "semicolon-bom-crlf": (";", True, "in.csv", {"lineterminator": "\r\n", "encoding": "utf-8-sig"}),
        "gzip": (",", True, "in.csv.gz", {"compression": "gzip"}),
        "whitespace-txt": (" ", True, "in.txt", {}),
    }[variant]
    if not header:
        frame = frame[trained["result"]["features"]]  # headerless: the model's columns by position
    src = tmp_path / name
    frame.to_csv(src, sep=sep, header=header, index=False, float_format="%.5f", **kwargs)
    out = tmp_path / "out.csv"
    result = detect(trained, src, output=str(out))
    assert result["total_rows"] == len(frame)

    in_lines = _data_lines(src)
    out_lines = _data_lines(out)
    delim = sep.encode()
    data_in = in_lines[1:] if header else in_lines
    assert len(out_lines) == len(data_in) + 1  # a header row, then one line per input row
    if header:
        assert out_lines[0] == in_lines[0] + delim + delim.join([b"reconstruction_error", b"is_anomaly", b"threshold"])
    for a, b in zip(data_in, out_lines[1:]):
        assert b.startswith(a + delim), (a, b)
        error, flag, threshold = b[len(a) + 1:].split(delim)
        assert float(error) >= 0 and flag in (b"0", b"1") and float(threshold) > 0
    # and it reads back as a table: every input column and value, plus the result columns
    back = pd.read_csv(out, sep=r"\s+" if sep == " " else sep, dtype=str, encoding="utf-8")
    assert len(back) == len(frame)
    if header:
        original = pd.read_csv(src, sep=r"\s+" if sep == " " else sep, dtype=str, encoding="utf-8-sig")
        pd.testing.assert_frame_equal(back[list(original.columns)], original)
    by_index = {r["index"]: r for r in result["results"]}
    np.testing.assert_allclose(back["reconstruction_error"].astype(float),
                               [by_index[i]["reconstruction_error"] for i in range(len(frame))], rtol=1e-5)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_outputs_round_trip(trained, rows, tmp_path, suffix):
    frame = rows.copy()
    frame.loc[[3, 4], "sensor_2"] = np.nan  # dropped: no score, must be null (not NaN) in JSON
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / f"out{suffix}"
    result = detect(trained, src, output=str(out), missing="drop", per_feature=True)
    text = out.read_text()
    if suffix == ".json":
        body = strict_json(text)
        records = body["results"]
        assert body["total_rows"] == len(frame) and body["anomaly_count"] == result["anomaly_count"]
        assert body["threshold"] == pytest.approx(result["threshold"])
    else:
        records = [strict_json(line) for line in text.splitlines() if line.strip()]
    assert [r["index"] for r in records] == list(range(len(frame)))
    expected_keys = {"index", *frame.columns, "reconstruction_error", "is_anomaly", "threshold",
                     *(f"sensor_{j}_contribution" for j in range(4))}
    assert all(set(r) == expected_keys for r in records)
    assert records[3]["reconstruction_error"] is None and records[3]["is_anomaly"] is False
    assert records[0]["timestamp"] == frame.loc[0, "timestamp"]
    assert records[10]["sensor_1"] == pytest.approx(frame.loc[10, "sensor_1"], rel=1e-6)
    by_index = {r["index"]: r for r in result["results"]}
    for r in records:
        if r["reconstruction_error"] is not None:
            assert r["reconstruction_error"] == pytest.approx(by_index[r["index"]]["reconstruction_error"], rel=1e-5)
            assert r["is_anomaly"] == by_index[r["index"]]["is_anomaly"]


def test_failed_run_keeps_the_previous_result_file(trained, dataset, tmp_path):
    lines = dataset["test"].read_text().splitlines()
    lines[900] += ",1,2,3,4"  # malformed far down: found only after earlier blocks were written
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.csv"
    out.write_text("previous results\n")
    with pytest.raises(DataError, match="malformed"):
        detect(trained, bad, output=str(out), block_bytes=4096)
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "results.csv"]  # no temporary left over


@pytest.mark.parametrize("where", ["under-a-file", "is-a-folder"])
def test_unwritable_output(trained, dataset, tmp_path, where):
    target = tmp_path / "file.txt"
    target.write_text("x")
    out = target / "results.csv" if where == "under-a-file" else tmp_path
    with pytest.raises(DataError, match="cannot write output"):
        detect(trained, dataset["test"], output=str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_output_in_a_new_folder(trained, rows, tmp_path):
    src = tmp_path / "in.csv"
    rows.to_csv(src, index=False)
    out = tmp_path / "new" / "deeper" / "results.csv"
    detect(trained, src, output=str(out))
    assert len(pd.read_csv(out)) == len(rows)


def test_format_scientific_matches_printf():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.lognormal(0, 6, 2000), [0.0, 1.0, 10.0, 1e-30, 9.9999995, 9.9999994, 0.099999996, 1e98, 123456789.0,
                                    5e-324, 2.5e-7],
    ])
    got = format_scientific(values)
    assert [float(g) for g in got] == pytest.approx([float(f"{v:.6e}") for v in values], rel=1e-6)
    assert got[:5] == [f"{v:.6e}".encode() for v in values[:5]]
    odd = format_scientific(np.array([np.nan, -1.5, np.inf, 1e200]))
    assert odd == [b"", b"-1.500000e+00", b"inf", b"1.000000e+200"]


def test_result_columns_appended_as_printf_would(tmp_path):
    """The appended text of each row, unscored (NaN) and unusual values among the usual ones included, is what
    formatting each value on its own gives: the fixed-width fast path and the per-row fallback agree."""
    fmt = CsvFormat(delimiter=";", has_header=True, names=("t", "x"), compression=None, bom=False)
    writer = ResultWriter(tmp_path / "r.csv", fmt, b"t;x", ["reconstruction_error", "is_anomaly", "threshold"])
    errors = np.array([1.5, np.nan, -2.0, np.inf, 1e120, 0.0, 123.456])
    flags = np.array([0, 0, 0, 1, 1, 0, 1], np.int8)
    threshold = np.array([40.5, 40.5, 40.5, 50.0, 50.0, np.nan, 7.0])
    lines = [f"2026-01-01 00:0{i};{i}".encode() for i in range(len(errors))]
    out = writer._csv_bytes(lines, {"reconstruction_error": errors, "is_anomaly": flags, "threshold": threshold})
    clean = writer._csv_bytes(lines[:1], {"reconstruction_error": errors[:1], "is_anomaly": flags[:1]})
    writer.abort()

    def text(v):
        return "" if np.isnan(v) else f"{v:.6e}"
    expected = b"".join(line + f";{text(e)};{f};{text(t)}\n".encode()
                        for line, e, f, t in zip(lines, errors, flags, threshold))
    assert out == expected
    assert clean == b"2026-01-01 00:00;0;1.500000e+00;0\n"


def test_abandoned_detection_leaves_no_result_file(trained, dataset, tmp_path):
    """Ctrl-C, a closed client or any exception mid-file: the result file is not written half-way."""
    out = tmp_path / "results.csv"
    events = service.iter_detect(str(dataset["test"]), version=trained["version"], store=trained["store"],
                                 output=str(out), block_bytes=4096)
    first = next(e for e in events if e["event"] == "progress")
    assert 0 < first["rows_read"] < len(dataset["test_frame"])
    events.close()
    assert list(tmp_path.iterdir()) == []
