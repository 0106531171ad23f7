"""Event-level figures (`anomaly.events`): equal to the shared reference `event_metrics.py` and to numbers worked
out by hand, through `anomaly evaluate --outputs` (the real command line) and after a real training evaluation."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly import events, synthetic
from anomaly.cli import main as cli_main
from anomaly.cli.evaluate_outputs import score_outputs

from conftest import assert_user_error, run_cli

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "tools" / "event_metrics.py"


def _mask(n: int, *spans: tuple[int, int]) -> np.ndarray:
    """n rows, True on each inclusive (first, last) span."""
    out = np.zeros(n, bool)
    for first, last in spans:
        out[first:last + 1] = True
    return out


# alpha: three events; a flag exactly `tolerance` rows before the first (caught), flagged runs 9 rows apart merged
# into one alert, a flag one row beyond reach of the second (missed, a false alarm), a flag exactly `tolerance`
# rows after the third (caught). beta: one long event, an early false alarm, two runs merged across its end.
# calm: no event, three flagged runs of which two merge.
ALPHA = (_mask(100, (20, 29), (60, 64), (88, 89)), _mask(100, (10, 10), (25, 27), (37, 37), (75, 75), (99, 99)))
BETA = (_mask(60, (30, 49)), _mask(60, (0, 1), (45, 45), (54, 54)))
CALM = (_mask(50), _mask(50, (5, 5), (10, 10), (40, 40)))

# Worked out by hand from the definitions (see the comments above).
ALPHA_COUNTS = {"rows": 100, "normal": 83, "events": 3, "caught": 2, "alerts": 4, "true_alerts": 3,
                "false_alerts": 1, "before": [10, 0], "after": [8, 10], "delays": [-10, 11]}
BETA_COUNTS = {"rows": 60, "normal": 40, "events": 1, "caught": 1, "alerts": 2, "true_alerts": 1,
               "false_alerts": 1, "before": [0], "after": [5], "delays": [15]}
SUITE_FIGURES = {"events": 4, "caught": 3, "event_recall": 0.75, "event_precision": 0.667, "event_f1": 0.706,
                 "false_per_10k": 162.6, "fpr": 0.062, "spill_before": 0.0, "spill_after": 8.0, "delay": 11.0,
                 "clean_alerts_per_10k": 400.0, "meets_goal": False}


@pytest.fixture
def scored_suite(tmp_path):
    """The three series as a suite folder and a folder of detect-style outputs; `lost` has no output."""
    suite, outputs = tmp_path / "suite", tmp_path / "detections"
    suite.mkdir()
    outputs.mkdir()
    for name, (labels, flags) in {"alpha": ALPHA, "beta": BETA, "calm": CALM}.items():
        value = np.sin(np.arange(len(labels)) / 5)
        pd.DataFrame({"value": value, "label": labels.astype(int)}).to_csv(suite / f"{name}.test.csv", index=False)
        pd.DataFrame({"value": value, "reconstruction_error": value ** 2, "is_anomaly": flags.astype(int)}).to_csv(
            outputs / f"{name}.csv", index=False)
    pd.DataFrame({"value": [1.0, 2.0], "label": [0, 1]}).to_csv(suite / "lost.test.csv", index=False)
    return suite, outputs


def _reference():
    if not REFERENCE.exists():
        pytest.skip(f"the shared reference {REFERENCE} is not beside this clone (CI has ../shared)")
    spec = importlib.util.spec_from_file_location("event_metrics", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_series_counts_match_hand_computed_numbers():
    for (labels, flags), expected in ((ALPHA, ALPHA_COUNTS), (BETA, BETA_COUNTS)):
        counts = events.series_counts(labels, flags)
        assert {k: counts[k] for k in expected} == expected
    assert events.series_counts(*ALPHA)["fpr"] == pytest.approx(4 / 83)
    calm = events.series_report(*CALM)
    assert calm["alerts"] == 2 and calm["clean_alerts_per_10k"] == 400.0 and "event_recall" not in calm


def test_tolerance_and_merge_gap_are_parameters():
    # no tolerance: only the flags inside the first event catch it (5 rows late); no merging: every run pages
    counts = events.series_counts(*ALPHA, tolerance=0, merge_gap=1)
    assert counts["caught"] == 1 and counts["delays"] == [5]
    assert counts["alerts"] == 5 and counts["true_alerts"] == 1
    # a wider merge gap joins the flag 14 rows before the first event's flags into their alert
    assert events.series_counts(*ALPHA, merge_gap=15)["alerts"] == 3


def test_pooled_figures_match_hand_computed_numbers_and_goal():
    pooled = events.pool([events.series_counts(*s) for s in (ALPHA, BETA, CALM)])
    assert pooled == SUITE_FIGURES
    perfect = events.pool([events.series_counts(ALPHA[0], ALPHA[0]), events.series_counts(*_clean_quiet())])
    assert perfect["event_recall"] == 1.0 and perfect["false_per_10k"] == 0 and perfect["meets_goal"] is True
    assert events.pool([events.series_counts(*CALM)])["meets_goal"] is False  # no event: recall undefined


def _clean_quiet():
    return _mask(20_000), _mask(20_000, (100, 101))  # one alert in 20k clean rows: 0.5 per 10k


def test_package_equals_the_shared_reference(scored_suite):
    reference = _reference()
    suite, outputs = scored_suite
    expected = reference.suite(str(suite), str(outputs))
    result = score_outputs(suite, outputs)
    ours = result["summary"]["detections"]
    assert result["missing"] == expected["missing"] == ["lost"] and ours["series"] == expected["series"] == 3
    for key, value in expected.items():
        if key in ("suite", "series", "missing"):
            continue
        mine = ours["events"][key]
        assert (mine is None and math.isnan(value)) if isinstance(value, float) and math.isnan(value) else \
            mine == value, (key, mine, value)
    # and both equal the hand-computed figures, so the comparison is not of two equal mistakes
    assert {k: ours["events"][k] for k in SUITE_FIGURES} == SUITE_FIGURES
    for labels, flags in (ALPHA, BETA, CALM):
        counts = events.series_counts(labels, flags)
        assert {k: counts[k] for k in reference.series(labels, flags)} == reference.series(labels, flags)


def test_evaluate_outputs_through_the_command_line(scored_suite, tmp_path):
    suite, outputs = scored_suite
    report_path = tmp_path / "events.json"
    proc = run_cli("anomaly", "evaluate", "--suite", suite, "--outputs", outputs, "--json", report_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report_path.read_text())["suites"]["suite"]
    assert {k: result["summary"]["detections"]["events"][k] for k in SUITE_FIGURES} == SUITE_FIGURES
    alpha = next(r for r in result["series"] if r["series"] == "alpha")["detectors"]["detections"]["events"]
    assert alpha["caught"] == 2 and alpha["event_recall"] == 0.667 and alpha["delays"] == [-10, 11]
    assert result["missing"] == ["lost"]
    suite_line = next(line for line in proc.stdout.splitlines() if line.startswith("suite (3 series)"))
    assert suite_line.split()[3:9] == ["3/4", "0.750", "0.667", "0.706", "162.60", "0.062"]
    assert "no output for 1 series (left out): lost" in proc.stdout
    # other options take effect: no tolerance catches fewer events
    proc = run_cli("anomaly", "evaluate", "--suite", suite, "--outputs", outputs, "--event-tolerance", "0", "-q")
    assert proc.returncode == 0 and "2/4" in proc.stdout.splitlines()[2], proc.stdout


def test_evaluate_outputs_refuses_outputs_of_another_length(scored_suite):
    suite, outputs = scored_suite
    pd.DataFrame({"is_anomaly": [0, 1, 0]}).to_csv(outputs / "lost.csv", index=False)
    assert_user_error(run_cli("anomaly", "evaluate", "--suite", suite, "--outputs", outputs),
                      "lost: 3 result rows for 2 test rows")
    (outputs / "lost.csv").write_text("is_anomaly\nmaybe\nno\n")
    assert_user_error(run_cli("anomaly", "evaluate", "--suite", suite, "--outputs", outputs), "'maybe'")


def test_training_evaluation_reports_event_figures(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, n_anom, seed in (("spiky", 6, 1), ("clean", 0, 2)):
        train = synthetic.make_series(300, n_features=2, seed=seed).drop(columns=["timestamp"])
        test = synthetic.make_series(200, n_features=2, seed=seed + 10).drop(columns=["timestamp"])
        test = synthetic.inject(test, n_anomalies=n_anom, magnitude=8.0, seed=seed) if n_anom else test.assign(label=0)
        train.to_csv(folder / f"{name}.train.csv", index=False)
        test.to_csv(folder / f"{name}.test.csv", index=False)
    out = tmp_path / "report.json"
    assert cli_main(["evaluate", "--suite", str(folder), "--baselines", "none", "--json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())["suites"]["tiny"]
    series = {r["series"]: r["detectors"]["pca w=auto"] for r in result["series"]}
    spiky, clean = series["spiky"], series["clean"]
    # the flags are those the row metrics were computed from: the same false positive rate
    assert spiky["events"]["fpr"] == pytest.approx(spiky["false_positive_rate"])
    assert clean["events"]["fpr"] == pytest.approx(clean["false_positive_rate"])
    assert spiky["events"]["events"] == 6 and spiky["events"]["caught"] >= 5  # blatant spikes
    for key in ("event_recall", "event_precision", "event_f1", "false_per_10k", "spill_before", "delay"):
        assert key in spiky["events"], key
    assert clean["events"]["events"] == 0 and "clean_alerts_per_10k" in clean["events"]
    pooled = result["summary"]["pca w=auto"]["events"]
    assert pooled == events.pool([spiky["events"], clean["events"]])
    assert pooled["caught"] == spiky["events"]["caught"] and "meets_goal" in pooled
