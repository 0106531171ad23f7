"""The real command line, run as a user runs it: `train.py`, `detect.py`, `python -m anomaly` and the installed
`anomaly` console command, in fresh processes. Every bad input is one `error:` line and a non-zero exit."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from anomaly import cli as anomaly_cli
from anomaly import service
from anomaly.detector import Detector
from anomaly.store import ArtifactPaths, ModelStore

from conftest import PYTHON, assert_user_error, cli_env, run_cli

# --- every bad input: one line, non-zero exit, no traceback -------------------------------------------------

# (case id, entry point, arguments, fragments the message must contain). `{name}` refers to the files and
# stores the `bad_inputs` fixture prepares. Data errors run through `train`, which reads the data before it
# imports torch (3 s a process); detection's own data paths are covered in process below and in test_output.
BAD_INPUTS = [
    ("missing-file", "detect.py", ["--data", "{dir}/nope.csv", "--model-dir", "{store}"], ["not found", "nope.csv"]),
    ("data-is-a-folder", "detect.py", ["--data", "{dir}", "--model-dir", "{store}"], ["directory"]),
    ("empty-file", "train.py", ["--data", "{empty}", "--model-dir", "{scratch}"], ["empty"]),
    ("blank-lines-only", "train.py", ["--data", "{blank}", "--model-dir", "{scratch}"], ["no data"]),
    ("header-only", "train.py", ["--data", "{header}", "--model-dir", "{scratch}"], ["no data rows"]),
    ("header-only-detect", "detect.py", ["--data", "{header}", "--model-dir", "{store}"], ["no data rows"]),
    ("no-numeric-column", "train.py", ["--data", "{text}", "--model-dir", "{scratch}"], ["no numeric column"]),
    ("not-utf8", "train.py", ["--data", "{latin1}", "--model-dir", "{scratch}"], ["UTF-8"]),
    ("unknown-column", "anomaly", ["train", "--data", "{train}", "--columns", "sensor_0,nope", "--model-dir",
                                   "{scratch}"], ["nope", "not found"]),
    ("malformed-csv", "anomaly", ["train", "--data", "{malformed}", "--model-dir", "{scratch}"], ["malformed"]),
    ("feature-mismatch", "detect.py", ["--data", "{wrong_columns}", "--model-dir", "{store}"],
     ["expects 4", "sensor_0, sensor_1, sensor_2, sensor_3", "sensor_0, sensor_1, pressure"]),
    ("unknown-version", "detect.py", ["--data", "{test}", "--model-dir", "{store}", "--version", "v9"],
     ["'v9' not found", "v1"]),
    ("no-model-yet", "detect.py", ["--data", "{test}", "--model-dir", "{scratch}"], ["no trained model"]),
    ("truncated-model", "detect.py", ["--data", "{test}", "--model-dir", "{truncated}"], ["corrupt"]),
    ("missing-scaler", "detect.py", ["--data", "{test}", "--model-dir", "{no_scaler}"], ["incomplete", "scaler.pkl"]),
    ("garbage-json", "detect.py", ["--data", "{test}", "--model-dir", "{garbage_json}"], ["corrupt", "threshold.json"]),
    ("explicit-path-missing", "detect.py", ["--data", "{test}", "--model", "{dir}/nowhere/model.pth"], ["incomplete"]),
    ("unwritable-output", "detect.py", ["--data", "{test}", "--model-dir", "{store}", "--output",
                                        "{test}/results.csv"], ["cannot write output"]),
    ("nan-with-missing-error", "train.py", ["--data", "{gappy}", "--model-dir", "{scratch}", "--missing",
                                                  "error"], ["missing", "sensor_1"]),
    ("version-exists", "train.py", ["--data", "{train}", "--model-dir", "{store}", "--version", "v1"],
     ["already exists"]),
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, dataset, trained) -> dict:
    """Prepare every bad file and broken store, then run all cases at once (3 at a time) to save wall time."""
    d = tmp_path_factory.mktemp("bad")
    files = {"dir": d, "store": trained["root"], "scratch": d / "scratch_models", "train": dataset["train"],
             "test": dataset["test"]}

    def put(name: str, body: bytes | str):
        path = d / name
        path.write_bytes(body.encode() if isinstance(body, str) else body)
        return path

    files["empty"] = put("empty.csv", b"")
    files["blank"] = put("blank.csv", "\n  \n\n")
    files["header"] = put("header.csv", "timestamp,sensor_0,sensor_1,sensor_2,sensor_3\n")
    files["text"] = put("text.csv", "name,host\nalpha,web-1\nbeta,web-2\n")
    files["latin1"] = put("latin1.csv", "caf\u00e9,b\n1,2\n3,4\n".encode("latin-1"))
    files["malformed"] = put("malformed.csv", "sensor_0,sensor_1,sensor_2,sensor_3\n1,2,3,4\n5,6,7,8,9,10\n1,2,3,4\n")
    files["wrong_columns"] = put("wrong.csv", "sensor_0,sensor_1,pressure\n1,2,3\n4,5,6\n")
    gappy = dataset["test_frame"].copy()
    gappy.loc[7, "sensor_1"] = np.nan
    gappy.to_csv(d / "gappy.csv", index=False)
    files["gappy"] = d / "gappy.csv"

    def broken(name: str, breaker) -> Path:
        root = d / name
        shutil.copytree(trained["root"], root)
        breaker(root / "v1")
        return root

    files["truncated"] = broken("truncated", lambda v: (v / "model.pth").write_bytes((v / "model.pth").read_bytes()[:200]))
    files["no_scaler"] = broken("no_scaler", lambda v: (v / "scaler.pkl").unlink())
    files["garbage_json"] = broken("garbage_json", lambda v: (v / "threshold.json").write_text('{"threshold": 0.5,'))

    def run(case):
        name, entry, args, _ = case
        return name, run_cli(entry, *[a.format(**files) for a in args])

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(run, BAD_INPUTS))
    return {"results": results, "files": files}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_clear_line(bad_inputs, case):
    name, _, _, fragments = case
    assert_user_error(bad_inputs["results"][name], *fragments)


def test_failed_runs_leave_no_output_and_no_version(bad_inputs, trained):
    files = bad_inputs["files"]
    assert list(files["dir"].glob("*results.csv*")) == []  # the unwritable output left nothing behind
    scratch = files["scratch"]
    assert not scratch.exists() or [p for p in scratch.iterdir()] == []
    assert ModelStore(trained["root"]).versions() == ["v1"]


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--data", "{train}", "--epochs", "0"], "epochs"),
    (["train", "--data", "{train}", "--validation-split", "1.5"], "validation_split"),
    (["train", "--data", "{train}", "--percentile", "100"], "percentile"),
    (["train", "--data", "{train}", "--threshold-method", "magic"], "magic"),
    (["train", "--data", "{train}", "--scaler", "zscore"], "unknown scaler 'zscore'"),
    (["train", "--data", "{train}", "--version", "../up"], "invalid version"),
    (["detect", "--data", "{headerless3}"], "expects 4"),
    (["detect", "--data", "{test}", "--label-column", "truth"], "truth"),
    (["detect", "--data", "{malformed_late}"], "malformed"),
    (["detect", "--data", "{gappy}", "--missing", "error"], "(sensor_1: 1; first at row 7)"),
    (["detect", "--data", "{test}", "--model", "{garbage}/model.pth"], "corrupt"),
    (["models", "show"], "needs a version"),
    (["models", "delete", "nope"], "not found"),
])
def test_more_bad_input_in_process(tmp_path, dataset, trained, copy_store, capsys, argv, fragment):
    """The same contract for further mistakes, through `anomaly.cli.main` in this process (faster)."""
    headerless = tmp_path / "h.txt"
    headerless.write_text("1 2 3\n4 5 6\n7 8 9\n")
    late = tmp_path / "late.csv"  # a malformed line near the end, after ~1000 good rows
    lines = dataset["test"].read_text().splitlines()
    lines[-5] += ",1,2,3"
    late.write_text("\n".join(lines) + "\n")
    root = copy_store(trained)
    garbage = tmp_path / "garbage"
    shutil.copytree(root / "v1", garbage)
    (garbage / "model.pth").write_bytes(b"\x80\x04" + bytes(range(256)))
    gappy = tmp_path / "gappy.csv"
    dataset["test_frame"].assign(sensor_1=lambda f: f["sensor_1"].mask(f.index == 7)).to_csv(gappy, index=False)
    names = {"train": dataset["train"], "test": dataset["test"], "headerless3": headerless, "malformed_late": late,
             "garbage": garbage, "gappy": gappy}
    args = [a.format(**names) for a in argv] + ["--model-dir", str(root)]
    if argv[0] == "train":
        args += ["--quiet"]
    code = anomaly_cli.main(args)
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert ModelStore(root).versions() == ["v1"]


# --- end to end on a generated dataset with injected anomalies ---------------------------------------------


@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, dataset) -> dict:
    """A model trained through `train.py` (the real CLI), in its own store."""
    root = tmp_path_factory.mktemp("cli") / "models"
    # The dataset's anomalies are isolated one-row spikes: the row-wise model (window 1) is the one for them.
    # The default (window 32, smoothed scores) flags the neighbourhood of each spike; see the incident test below.
    proc = run_cli("train.py", "--data", dataset["train"], "--model-dir", root, "--epochs", "15", "--seed", "0",
                   "--batch-size", "64", "--window", "1", "--quiet", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return {"root": root, "train": json.loads(proc.stdout)}


def test_train_cli_result(cli_model, dataset):
    result = cli_model["train"]
    assert result["status"] == "success"
    assert result["features"] == dataset["features"]  # the timestamp is not a feature
    assert result["rows"] == len(dataset["train_frame"])
    assert result["threshold_method"] == "percentile" and result["threshold_params"] == {"percentile": 95.0}
    assert result["data_report"]["ignored_columns"] == ["timestamp"]
    store = ModelStore(cli_model["root"])
    assert store.versions() == [result["version"]] and store.latest() == result["version"]
    assert (cli_model["root"] / "latest").read_text().strip() == result["version"]
    assert sorted(p.name for p in (cli_model["root"] / result["version"]).iterdir()) == \
        ["model.pth", "model_config.json", "scaler.pkl", "threshold.json"]
    threshold = json.loads((cli_model["root"] / result["version"] / "threshold.json").read_text())
    assert threshold["threshold"] == pytest.approx(result["threshold"])
    assert set(threshold["stats"]) >= {"mean", "std", "p95", "count"}


@pytest.fixture(scope="module")
def cli_detection(cli_model, dataset, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("cli_out")
    proc = run_cli("detect.py", "--data", dataset["test"], "--model-dir", cli_model["root"], "--json",
                   "--output", out / "results.csv", "--per-feature")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return {"summary": json.loads(proc.stdout), "csv": out / "results.csv"}


def test_detect_json_summary_schema(cli_detection, dataset):
    s = cli_detection["summary"]
    assert s["status"] == "success"
    n = len(dataset["test_frame"])
    assert s["total_rows"] == n
    assert isinstance(s["anomaly_count"], int) and isinstance(s["threshold"], float)
    assert s["anomaly_ratio"] == pytest.approx(s["anomaly_count"] / n)
    results = s["results"]
    assert len(results) == n and sorted(r["index"] for r in results) == list(range(n))
    for r in results:
        assert set(r) - {"threshold"} == {"index", "time", "reconstruction_error", "is_anomaly"}
        assert isinstance(r["is_anomaly"], bool)
        # a row held to a moved threshold (following the file's level) names it
        assert r["is_anomaly"] == (r["reconstruction_error"] > r.get("threshold", s["threshold"]))
    assert sum(r["is_anomaly"] for r in results) == s["anomaly_count"]


def test_detect_finds_blatant_anomalies_at_the_expected_false_positive_rate(cli_detection, dataset):
    s = cli_detection["summary"]
    flagged = {r["index"] for r in s["results"] if r["is_anomaly"]}
    anomalies = set(dataset["anomalies"].tolist())
    normal = len(dataset["test_frame"]) - len(anomalies)
    recall = len(flagged & anomalies) / len(anomalies)
    fpr = len(flagged - anomalies) / normal
    assert recall >= 0.9, recall
    assert 0.02 <= fpr <= 0.10, fpr  # percentile 95: about 5% of normal rows
    assert s["metrics"]["recall"] == pytest.approx(recall)  # the `label` column is scored, not used as a feature


def test_output_csv_keeps_every_input_column_and_row(cli_detection, dataset):
    original = pd.read_csv(dataset["test"], dtype=str)
    out = pd.read_csv(cli_detection["csv"], dtype=str)
    # threshold: the one each row was held to (the stored one, or higher where the file's level was followed)
    assert list(out.columns) == list(original.columns) + ["reconstruction_error", "is_anomaly", "threshold"] + \
        [f"{f}_contribution" for f in dataset["features"]]
    assert (out["is_anomaly"].astype(int) == (out["reconstruction_error"].astype(float)
                                               > out["threshold"].astype(float))).all()
    assert len(out) == len(original)
    pd.testing.assert_frame_equal(out[original.columns], original)
    by_index = {r["index"]: r for r in cli_detection["summary"]["results"]}
    errors = out["reconstruction_error"].astype(float).to_numpy()
    np.testing.assert_allclose(errors, [by_index[i]["reconstruction_error"] for i in range(len(out))], rtol=1e-5)
    assert out["is_anomaly"].astype(int).tolist() == [int(by_index[i]["is_anomaly"]) for i in range(len(out))]


def test_per_feature_points_at_the_perturbed_column(cli_detection, dataset):
    out = pd.read_csv(cli_detection["csv"])
    share_cols = [f"{f}_contribution" for f in dataset["features"]]
    for row, column in dataset["anomaly_columns"].items():
        shares = out.loc[row, share_cols].astype(float)
        assert shares.idxmax() == f"{column}_contribution", (row, shares.to_dict())
    np.testing.assert_allclose(out[share_cols].sum(axis=1), 1.0, atol=1e-4)


def test_detect_prints_a_readable_summary(cli_model, dataset, tmp_path, capsys):
    out = tmp_path / "res.json"
    code = anomaly_cli.main(["detect", "--data", str(dataset["test"]), "--model-dir", str(cli_model["root"]),
                             "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"Rows: {len(dataset['test_frame'])}" in stdout
    assert "Incidents (strongest first" in stdout and "severity" in stdout and "threshold:" in stdout
    assert "Against labels (label)" in stdout
    body = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert len(body["results"]) == len(dataset["test_frame"])
    assert body["total_rows"] == len(dataset["test_frame"])
    assert set(body["results"][0]) >= {"index", "timestamp", "sensor_0", "label", "reconstruction_error", "is_anomaly"}


def test_classic_explicit_paths_for_train_and_detect(dataset, tmp_path, capsys):
    art = tmp_path / "classic"
    paths = {"--model": art / "weights.pth", "--threshold": art / "thr.json", "--config": art / "cfg.json"}
    flat = [str(x) for kv in paths.items() for x in kv]
    train = run_cli("train.py", "--data", dataset["train_small"], *flat, "--scaler", "minmax", "--epochs", "3",
                    "--quiet", "--json")
    assert train.returncode == 0, train.stderr
    assert all(p.is_file() for p in paths.values())
    assert (art / "scaler.pkl").is_file()  # not given: beside the model under its standard name
    assert json.loads(paths["--config"].read_text())["scaler"] == "minmax"
    assert json.loads(train.stdout)["version"] == str(art)
    assert type(joblib.load(art / "scaler.pkl")).__name__ == "MinMaxScaler"
    # detection through `anomaly.cli.main` in this process (train.py above covered the subprocess route)
    code = anomaly_cli.main(["detect", "--data", str(dataset["test"]), *flat, "--scaler", str(art / "scaler.pkl"),
                             "--json"])
    assert code == 0
    got = [r["reconstruction_error"] for r in sorted(json.loads(capsys.readouterr().out)["results"],
                                                     key=lambda r: r["index"])]
    det = Detector.load(ArtifactPaths(model=paths["--model"], config=paths["--config"],
                                      threshold=paths["--threshold"], scaler=art / "scaler.pkl"))
    X = dataset["test_frame"][dataset["features"]].to_numpy(np.float64)  # as detection reads the file
    np.testing.assert_allclose(got, det.decision_function(X), rtol=1e-5)
    train_rows = dataset["train_frame"].iloc[:300][dataset["features"]].to_numpy(np.float32)
    lo, hi = train_rows.min(axis=0), train_rows.max(axis=0)  # min-max scaling from the training rows only
    np.testing.assert_allclose(det.transform(X[:5]), (X[:5] - lo) / (hi - lo), rtol=1e-4, atol=1e-5)


def test_console_command_and_module(trained, dataset):
    """`pip install -e .` installed an `anomaly` command; `python -m anomaly` works too."""
    exe = Path(PYTHON).parent / "anomaly"
    assert exe.is_file(), "run `pip install -e .` (make install)"
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}  # found through the install, from anywhere
    proc = subprocess.run([str(exe), "models", "list", "--model-dir", str(trained["root"]), "--json"], cwd="/",
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [m["version"] for m in json.loads(proc.stdout)["models"]] == ["v1"]
    helped = run_cli("anomaly", "--help")
    assert helped.returncode == 0 and all(c in helped.stdout for c in ("train", "detect", "models"))


def test_gzip_and_window_through_the_cli(dataset, tmp_path, capsys):
    """A window model trained on a gzipped TXT with a tab delimiter; detection gives every row one score.
    (`anomaly.cli.main` in this process: the subprocess tests above already cover the entry points.)"""
    frame = dataset["train_frame"].iloc[:400]
    gz = tmp_path / "train.txt.gz"
    gz.write_bytes(gzip.compress(frame.to_csv(sep="\t", index=False, float_format="%.5f").encode()))
    root = tmp_path / "models"
    code = anomaly_cli.main(["train", "--data", str(gz), "--model-dir", str(root), "--window", "5", "--epochs", "3",
                             "--version", "w", "--quiet"])
    assert code == 0
    assert "version w" in capsys.readouterr().out
    test = tmp_path / "test.csv"
    dataset["test_frame"].iloc[:200].to_csv(test, index=False)
    result = service.detect(str(test), version="w", store=ModelStore(root), max_results=None)
    assert result["window"] == 5 and result["total_rows"] == 200 and result["scored_rows"] == 200
    assert sorted(r["index"] for r in result["results"]) == list(range(200))


def test_default_settings_find_every_incident_and_stay_quiet_far_from_them(tmp_path):
    """Default window and smoothing on incident-style data (a level shift, a faster cycle, a noise burst, a stuck
    sensor): every incident is flagged, and rows far from any incident keep about the percentile's rate."""
    from anomaly.synthetic import inject_incidents, make_series

    make_series(3000, seed=0).to_csv(tmp_path / "train.csv", index=False)
    test = inject_incidents(make_series(4000, seed=2, start="2026-02-01"))
    test.to_csv(tmp_path / "test.csv", index=False)
    root = tmp_path / "models"
    proc = run_cli("train.py", "--data", tmp_path / "train.csv", "--model-dir", root, "--epochs", "15",
                   "--batch-size", "64", "--quiet")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("detect.py", "--data", tmp_path / "test.csv", "--model-dir", root, "--json")
    assert proc.returncode == 0, proc.stderr
    flags = np.zeros(len(test), bool)
    flags[[r["index"] for r in json.loads(proc.stdout)["results"] if r["is_anomaly"]]] = True
    labels = test["label"].to_numpy().astype(bool)
    starts = np.flatnonzero(np.diff(np.r_[0, labels.astype(int)]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[labels.astype(int), 0]) == -1)
    assert all(flags[a:b + 1].any() for a, b in zip(starts, ends))  # every incident and spike
    near = np.convolve(labels, np.ones(2 * 64 + 1), mode="same") > 0  # within window + smoothing of one
    # Smoothed scores are autocorrelated, so 300 held-out rows estimate the 95th percentile loosely.
    assert flags[~near].mean() <= 0.15


def test_detect_as_a_program_turns_collection_back_on(cli_model, dataset, tmp_path, monkeypatch, capsys):
    """Run as a program (`detect.py`), detection tunes its process (`anomaly.memory`): no cyclic collection only
    until the first block is scored, on again after an error too, and one handler for the exit."""
    import gc

    from anomaly import memory

    registered = []
    monkeypatch.setattr(anomaly_cli.commands.atexit, "register", registered.append)  # this test process keeps its exit
    out = tmp_path / "res.csv"
    args = ["detect", "--data", str(dataset["test"]), "--model-dir", str(cli_model["root"]), "--output", str(out)]
    assert anomaly_cli.main(args, program=True) == 0
    assert gc.isenabled()
    assert anomaly_cli.main(args[:2] + [str(tmp_path / "nope.csv")] + args[3:], program=True) == 2
    assert gc.isenabled() and "not found" in capsys.readouterr().err
    assert registered == [memory.exit_without_collecting] * 2
    anomaly_cli.main(args)  # in-process callers (argv given) keep their process as it was
    assert len(registered) == 2
    plain = tmp_path / "plain.csv"
    assert anomaly_cli.main(args[:-1] + [str(plain)]) == 0
    assert plain.read_bytes() == out.read_bytes()
