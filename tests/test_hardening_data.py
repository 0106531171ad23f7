"""Issue 23, hardening II, the data-reading half: no silently shifted column, every read bounded while it runs.
One test (or a few) per defect of the probe (D1, D2, D3, D13, D14, D15, D22, D23, D27, `--plot` without
matplotlib), through the real reader, the real detection pipeline, the real command line or the real server."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
import tracemalloc

import numpy as np
import pytest
import torch

from anomaly import cli as anomaly_cli
from anomaly import data, limits, service
from anomaly.errors import AnomalyError, ArtifactError, DataError
from anomaly.store import ModelStore

from conftest import FEATURES, PYTHON, REPO, assert_user_error, cli_env, run_cli
from serverproc import ServerProcess, server_dirs


def with_trailing_delimiter(text: str, header_too: bool = False) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0] + ("," if header_too else "")] + [ln + "," if ln else ln for ln in lines[1:]])


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    code = anomaly_cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, *fragments: str) -> str:
    lines = err.strip("\n").splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


# --- D1: rows with more fields than the header -----------------------------------------------------------------


@pytest.mark.parametrize("header_too", [False, True])
def test_trailing_delimiter_is_dropped_in_training(tmp_path, dataset, header_too):
    clean = dataset["train"].read_text()
    trailing = tmp_path / "trail.csv"
    trailing.write_text(with_trailing_delimiter(clean, header_too))
    plain, trail = data.read_table(dataset["train"]), data.read_table(trailing)
    assert trail.features == plain.features == FEATURES  # before: sensor_0 held sensor_1's values
    np.testing.assert_array_equal(trail.X, plain.X)
    assert trail.report["trailing_delimiter"] and "empty_columns" in trail.report
    assert not trail.report["empty_columns"]


def test_trailing_delimiter_gives_the_same_detection_and_result_file(tmp_path, dataset, trained):
    trailing = tmp_path / "trail_test.csv"
    trailing.write_text(with_trailing_delimiter(dataset["test"].read_text()))
    store = ModelStore(trained["root"])
    plain = service.detect(str(dataset["test"]), version="v1", store=store, output=str(tmp_path / "plain.csv"))
    trail = service.detect(str(trailing), version="v1", store=store, output=str(tmp_path / "trail.csv"),
                           return_details=True)
    assert trail["anomaly_count"] == plain["anomaly_count"]  # before: 750 against 406 on the probe's file
    assert all(r["time"].startswith("2026-") for r in trail["results"][:5]), trail["results"][:2]  # not "0.01891"
    # the result CSV keeps the user's lines, without the empty field, the result columns under their names
    assert (tmp_path / "trail.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


def test_a_row_with_more_values_than_the_header_is_an_error_naming_its_line(tmp_path, dataset, trained, capsys):
    lines = dataset["test"].read_text().split("\n")
    lines[7] += ",12.5"  # file line 8
    bad = tmp_path / "extra.csv"
    bad.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"line 8 has more fields than the header's 6 columns"):
        data.read_table(bad)
    # detection reads only the model's columns (pandas then drops surplus fields without a word)
    code, out, err = run_main(["detect", "--data", str(bad), "--model-dir", str(trained["root"]), "--json",
                               "--output", str(tmp_path / "r.csv")], capsys)
    one_error_line(code, err, "line 8 has more fields")
    assert not (tmp_path / "r.csv").exists()
    lines[7] += ",1,2,3,4"  # past the guard columns: pandas' own count, translated
    bad.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"line 8 has 11 fields, more than the header's 6 columns"):
        data.read_table(bad)


def test_a_row_longer_than_the_header_in_a_later_block_names_its_file_line(tmp_path):
    rows = [f"{i},{i % 7},{i % 5}" for i in range(30_000)]
    rows[25_000] += ",9"
    f = tmp_path / "late.csv"
    f.write_text("a,b,c\n" + "\n".join(rows) + "\n")
    fmt = data.sniff(f)
    with pytest.raises(DataError, match=r"line 25002 has more fields"):
        for _ in data.iter_blocks(f, fmt, ["a", "b", "c"], block_bytes=64 << 10):
            pass


@pytest.mark.parametrize("header", ["timestamp;sensor_0;sensor_1;sensor_2", "timestamp\tsensor_0\tsensor_1\tsensor_2"])
def test_a_header_written_with_another_delimiter_is_refused(tmp_path, header):
    f = tmp_path / "mixed.csv"
    f.write_text(header + "\n" + "".join(f"2026-01-01 00:0{i}:00,{i},{i * 2},{i * 3}\n" for i in range(9)))
    with pytest.raises(DataError, match="separates its names with .* but the data rows use ','"):
        data.read_table(f)  # before: one feature named after the whole header line


def test_a_header_with_an_unbalanced_quote_is_refused(tmp_path):
    f = tmp_path / "quote.csv"
    f.write_text('timestamp,"sensor_0,sensor_1,sensor_2\n' + "".join(f"t{i},{i},{i * 2},{i * 3}\n" for i in range(9)))
    with pytest.raises(DataError, match="header .* quote"):
        data.read_table(f)


def test_a_headerless_file_with_trailing_delimiters_keeps_its_columns(tmp_path):
    f = tmp_path / "nohead.csv"
    f.write_text("".join(f"{i},{i * 2},{(i * 7) % 5}.5,\n" for i in range(40)))
    table = data.read_table(f)
    assert table.features == ["col_0", "col_1", "col_2"]
    np.testing.assert_array_equal(table.X[:, 1], np.arange(40) * 2.0)


# --- D2, D23: long lines and wide files, bounded while reading ----------------------------------------------------


def test_one_long_line_is_refused_after_reading_a_little_of_it(tmp_path):
    f = tmp_path / "line.csv"
    f.write_bytes(b"1.5," * (8 << 20))  # 32 MiB, no newline (the probe's was 100 MB)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"line 1 is longer than 1 MiB"):
            data.read_table(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # a few MiB read, not the line


def test_a_long_line_deep_in_the_file_is_refused_with_its_line(tmp_path, trained, dataset, capsys):
    lines = dataset["test"].read_text().split("\n")
    lines[500] = "9" * (3 << 20)  # file line 501: 3 MiB
    f = tmp_path / "deep.csv"
    f.write_text("\n".join(lines))
    code, out, err = run_main(["detect", "--data", str(f), "--model-dir", str(trained["root"]), "--json"], capsys)
    one_error_line(code, err, "line 501 is longer than 1 MiB")


@pytest.mark.parametrize("header", [True, False])
def test_too_many_columns_are_refused_at_once(tmp_path, header):
    f = tmp_path / "wide.csv"
    n = limits.MAX_COLUMNS * 2  # the probe's 20,000 columns: over 120 s before
    head = ",".join(f"c{i}" for i in range(n)) + "\n" if header else ""
    f.write_text(head + "".join(",".join(["1.5"] * n) + "\n" for _ in range(3)))
    started = time.monotonic()
    with pytest.raises(DataError, match=f"{n} columns, more than {limits.MAX_COLUMNS}"):
        data.read_table(f)
    assert time.monotonic() - started < 10


def test_a_header_wider_than_64_kib_is_read_whole(tmp_path):
    names = [f"machine_{i:04d}_temperature_sensor_reading_celsius" for i in range(2000)]  # ~100 KiB header
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, len(names)))
    f = tmp_path / "wide.csv"
    f.write_text(",".join(names) + "\n" + "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in values))
    table = data.read_table(f)  # before: "has a header row but no data rows"
    assert table.features == names
    np.testing.assert_allclose(table.X, values, atol=1e-4)


# --- D3: decompressed size -------------------------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_while_it_inflates(tmp_path, monkeypatch):
    # the probe's bomb: 611 KB of gzip, 400 MB of rows; the limit is 100x the compressed size, at least 64 MiB
    assert limits.gzip_allowance(611_000) == limits.GZIP_MIN_BYTES < 400_000_000
    monkeypatch.setattr(limits, "GZIP_MIN_BYTES", 1 << 20)  # the same rule at a test's scale
    f = tmp_path / "bomb.csv.gz"
    f.write_bytes(gzip.compress(b"a,b,c,d\n" + b"0,0,0,1\n" * (3 << 20), 9))
    assert f.stat().st_size * limits.GZIP_MAX_RATIO < 24 << 20
    with pytest.raises(DataError, match="decompresses to more than .*gunzip"):
        data.read_table(f)
    fine = tmp_path / "fine.csv.gz"
    fine.write_bytes(gzip.compress(b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * i % 97) for i in range(5000))))
    assert len(data.read_table(fine).X) == 5000


# --- D13: mostly empty columns --------------------------------------------------------------------------------------


def _sparse_file(tmp_path, dataset, keep_every: int = 500):
    frame = dataset["train_frame"].copy()
    frame.loc[frame.index % keep_every != 0, "sensor_2"] = np.nan  # 99.8% empty
    f = tmp_path / "sparse.csv"
    frame.to_csv(f, index=False, float_format="%.5f")
    return f


def test_a_mostly_empty_column_is_left_out_of_training_by_name(tmp_path, dataset, capsys):
    f = _sparse_file(tmp_path, dataset)
    table = data.read_table(f)
    assert table.features == ["sensor_0", "sensor_1", "sensor_3"]
    assert table.report["mostly_empty_columns"] == {"sensor_2": 0.998}
    code, out, err = run_main(["train", "--data", str(f), "--model-dir", str(tmp_path / "m"), "--model-type", "dense",
                               "--window", "1", "--epochs", "1", "--quiet"], capsys)
    assert code == 0, err
    assert "warning: column(s) more than 50% empty left out: sensor_2 (99.8% missing)" in out
    with pytest.raises(DataError, match=r"sensor_2 \(99.8% missing\) are more than 50% empty"):
        data.read_table(f, columns=["sensor_1", "sensor_2"])  # named by the user: refused, not filled in


def test_a_mostly_empty_column_in_detection_is_a_warning(tmp_path, dataset, trained):
    frame = dataset["test_frame"].copy()
    frame.loc[frame.index % 10 != 0, "sensor_1"] = np.nan
    f = tmp_path / "sparse_test.csv"
    frame.to_csv(f, index=False, float_format="%.5f")
    result = service.detect(str(f), version="v1", store=ModelStore(trained["root"]))
    assert any("column sensor_1 is 90.0% missing in this file" in w for w in result["warnings"]), result["warnings"]


# --- D14: a header inside the data ------------------------------------------------------------------------------------


def test_multi_member_gzip_and_concatenated_files_skip_the_second_header(tmp_path, dataset, trained):
    one = dataset["test"].read_bytes()
    rows = len(dataset["test_frame"])
    members = tmp_path / "two.csv.gz"
    members.write_bytes(gzip.compress(one) + gzip.compress(b"\xef\xbb\xbf" + one))  # `cat a.csv.gz b.csv.gz`
    plain = tmp_path / "two.csv"
    plain.write_bytes(one + one)
    for f in (members, plain):
        table = data.read_table(f)
        assert len(table.X) == 2 * rows and table.report["repeated_header_lines"] == 1
        assert table.report["missing_values"] == 0  # before: the header became a row of NaN, filled in and scored
        result = service.detect(str(f), version="v1", store=ModelStore(trained["root"]))
        assert result["total_rows"] == 2 * rows and result["missing"]["missing_values"] == 0
        assert any("repeating the header" in w for w in result["warnings"])


# --- D15: nothing scored --------------------------------------------------------------------------------------------


def test_a_file_shorter_than_the_window_is_an_error_not_zero_anomalies(tmp_path, dataset, trained_window, capsys):
    f = tmp_path / "short.csv"
    f.write_text("\n".join(dataset["test"].read_text().split("\n")[:4]) + "\n")  # 3 rows, window 5
    code, out, err = run_main(["detect", "--data", str(f), "--model-dir", str(trained_window["root"]), "--json",
                               "--output", str(tmp_path / "r.csv")], capsys)
    one_error_line(code, err, "3 data row(s), fewer than the 5 rows of the model's window")
    assert not (tmp_path / "r.csv").exists()


def test_dropping_every_row_is_an_error(tmp_path, dataset, trained):
    frame = dataset["test_frame"].iloc[:50].copy()
    frame.loc[:, "sensor_3"] = np.nan
    frame.loc[0, "sensor_3"] = 1.0
    frame.loc[0, "sensor_0"] = np.nan
    f = tmp_path / "holes.csv"
    frame.to_csv(f, index=False)
    with pytest.raises(DataError, match="--missing drop dropped them all"):
        service.detect(str(f), version="v1", store=ModelStore(trained["root"]), missing="drop")


# --- D22: warnings before the error line ------------------------------------------------------------------------


def test_huge_values_give_one_error_line_and_no_numpy_warning(tmp_path):
    rng = np.random.default_rng(0)
    f = tmp_path / "huge.csv"
    f.write_text("a,b\n" + "".join(f"{rng.normal() * 1e200},{rng.normal()}\n" for _ in range(400)))
    proc = run_cli("train.py", "--data", f, "--model-dir", tmp_path / "m", "--quiet")  # default pca, window auto
    assert_user_error(proc, "too large to scale")  # before: 3 RuntimeWarnings (6 lines) first


def test_python_warnings_go_to_the_debug_log(capsys):
    import warnings

    with anomaly_cli.commands._warnings_to_log("detect"):
        warnings.warn("overflow somewhere", RuntimeWarning, stacklevel=1)
    assert "overflow" not in capsys.readouterr().err


# --- D27: artifacts that load but flag nothing -------------------------------------------------------------------


def test_a_near_zero_scale_or_nan_weights_are_refused_on_load(copy_store, trained, dataset, capsys):
    root = copy_store(trained)
    config_path = root / "v1" / "model_config.json"
    config = json.loads(config_path.read_text())
    original = config_path.read_text()
    config["scaler_affine"]["mul"][0] = 1e-320
    config_path.write_text(json.dumps(config))
    code, out, err = run_main(["detect", "--data", str(dataset["test"]), "--model-dir", str(root), "--json"], capsys)
    one_error_line(code, err, "model v1 is corrupt", "scaling of feature sensor_0")
    config["scaler_affine"]["mul"][0] = 1e-12  # a normal number, but sensor_0's training range becomes ~1e-12
    config_path.write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="squashes its training range"):
        service.detect(str(dataset["test"]), version="v1", store=ModelStore(root))
    config_path.write_text(original)
    weights = torch.load(root / "v1" / "model.pth", weights_only=True)
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    torch.save(weights, root / "v1" / "model.pth")
    with pytest.raises(ArtifactError, match=f"weight {first} holds NaN"):
        service.detect(str(dataset["test"]), version="v1", store=ModelStore(root))


# --- a new user: --plot without matplotlib --------------------------------------------------------------------------


NO_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; from anomaly.cli import main; "
                 "sys.exit(main(sys.argv[1:], program=True))")


def test_plot_without_matplotlib_is_refused_before_any_work(tmp_path, dataset, trained):
    def run(*args):
        return subprocess.run([PYTHON, "-c", NO_MATPLOTLIB, *map(str, args)], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=240)

    detect = run("detect", "--data", dataset["test"], "--model-dir", trained["root"], "--output", tmp_path / "r.csv",
                 "--plot", tmp_path / "p.png")
    assert_user_error(detect, "pip install 'anomaly[plot]'")
    train = run("train", "--data", dataset["train_small"], "--model-dir", tmp_path / "m", "--plot", tmp_path / "t.png")
    assert_user_error(train, "matplotlib")
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "m").exists()


# --- the server's uploads go through the same reader -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, dataset, trained):
    tmp = tmp_path_factory.mktemp("data_server")
    data_root, model_dir = server_dirs(tmp, dataset, trained)
    srv = ServerProcess(tmp, data_root, model_dir)
    yield srv
    srv.stop()


def test_uploads_are_bounded_and_read_like_files(server, dataset):
    import psutil

    rss = psutil.Process(server.proc.pid)
    before = rss.memory_info().rss
    with server.client() as http:
        reply = http.post("/api/detect/upload", params={"version": "v1"}, content=b"1.5," * (8 << 20),
                          headers={"Content-Type": "text/csv"})  # 32 MiB, one line: 4.5 GB and no answer before
        assert reply.status_code == 422 and re.search(r"line 1 (of the upload )?is longer than 1 MiB", reply.json()["error"]), reply.text
        assert rss.memory_info().rss - before < 300 << 20
        body = dataset["test"].read_text()
        plain = http.post("/api/detect/upload", params={"version": "v1", "max_results": 0}, content=body.encode())
        trail = http.post("/api/detect/upload", params={"version": "v1", "max_results": 0},
                          content=with_trailing_delimiter(body).encode())
        assert plain.status_code == trail.status_code == 200, trail.text
        assert trail.json()["anomaly_count"] == plain.json()["anomaly_count"]
        assert trail.json()["top_anomalies"] == plain.json()["top_anomalies"]


def test_limits_live_in_one_module():
    assert {"MAX_LINE_BYTES", "MAX_COLUMNS", "GZIP_MAX_RATIO", "GZIP_MIN_BYTES", "MAX_MISSING_SHARE"} <= set(vars(limits))
    assert issubclass(DataError, AnomalyError)
