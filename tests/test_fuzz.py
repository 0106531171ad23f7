"""Fuzzing the CSV front door: a few hundred mutated files (seeded: truncations, byte flips, huge numbers,
NaN/inf, wrong delimiters, CR-only line endings, quoted newlines, empty and extra columns, BOMs, NUL bytes,
gzip, ...) through real training and detection. Whatever the file, the tool either succeeds (strict JSON on
stdout) or refuses with a non-zero exit and exactly one `error:` line; never a traceback.

Most runs call `anomaly.cli.main` in this process (a fresh interpreter costs ~3 s); a sample goes through
the real `train.py` / `detect.py` in subprocesses.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from anomaly import cli as anomaly_cli
from anomaly import data, service
from anomaly.errors import DataError
from anomaly.limits import MAX_COLUMNS, MAX_LINE_BYTES
from anomaly.store import ModelStore

from conftest import run_cli

SEED = int(os.environ.get("ANOMALY_FUZZ_SEED", 13))  # another seed explores further: ANOMALY_FUZZ_SEED=7 pytest ...
DETECT_RUNS = 400
TRAIN_RUNS = 150
SUBPROCESS_RUNS = 6  # each of train.py and detect.py

HUGE = [b"1e308", b"-1e308", b"3e38", b"1e39", b"-3.5e38", b"1e20", b"9e999", b"-9e999", b"1e-320", b"5e-45",
        b"123456789012345678901234567890", b"0x1F"]
NAN_TOKENS = [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"-Infinity", b"NA", b"", b"null", b"#N/A"]
WORDS = [b"error", b"--", b"n/a", b"\xc3\xa9t\xc3\xa9", b"1,5", b'"7"', b"TRUE", b"1e", b"."]


def _fields(line: bytes) -> list[bytes]:
    return line.split(b",")


def _edit_fields(rng: random.Random, body: bytes, make, share: float = 0.05) -> bytes:
    lines = body.split(b"\n")
    for i in range(1, len(lines)):
        if lines[i] and rng.random() < share:
            fields = _fields(lines[i])
            j = rng.randrange(len(fields))
            fields[j] = make(rng)
            lines[i] = b",".join(fields)
    return b"\n".join(lines)


def truncate(rng, body):
    return body[: rng.randrange(1, len(body))]


def byte_flips(rng, body):
    data = bytearray(body)
    for _ in range(rng.randint(1, 12)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def huge_numbers(rng, body):
    return _edit_fields(rng, body, lambda r: r.choice(HUGE), share=rng.choice([0.01, 0.1, 0.5]))


def nan_and_inf(rng, body):
    return _edit_fields(rng, body, lambda r: r.choice(NAN_TOKENS), share=rng.choice([0.01, 0.2, 0.9]))


def stray_words(rng, body):
    return _edit_fields(rng, body, lambda r: r.choice(WORDS), share=rng.choice([0.005, 0.05, 0.5]))


def wrong_delimiter(rng, body):
    new = rng.choice([b";", b"\t", b" ", b"|", b", "])
    if rng.random() < 0.5:
        return body.replace(b",", new)
    lines = body.split(b"\n")
    for i in rng.sample(range(len(lines)), k=max(1, len(lines) // 10)):
        lines[i] = lines[i].replace(b",", new)
    return b"\n".join(lines)


def line_endings(rng, body):
    return rng.choice([body.replace(b"\n", b"\r"), body.replace(b"\n", b"\r\n"),
                       body.replace(b"\n", b"\r\n", body.count(b"\n") // 2), body.replace(b"\n", b"\n\n")])


def quoted_newlines(rng, body):
    lines = body.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(1, len(lines))
        fields = _fields(lines[i])
        j = rng.randrange(len(fields))
        fields[j] = rng.choice([b'"' + fields[j][:4] + b"\n" + fields[j][4:] + b'"', b'"' + fields[j], b'""',
                                b'"a""b"', b'"' + fields[j] + b'"'])
        lines[i] = b",".join(fields)
    return b"\n".join(lines)


def column_count(rng, body):
    lines = body.split(b"\n")
    for i in rng.sample(range(len(lines)), k=rng.randint(1, 5)):
        fields = _fields(lines[i])
        choice = rng.random()
        if choice < 0.4 and len(fields) > 1:
            fields = fields[: rng.randrange(1, len(fields))]  # too few
        elif choice < 0.7:
            fields += [b"1"] * rng.randint(1, 3)  # too many
        else:
            fields = [b""] * len(fields)  # all empty
        lines[i] = b",".join(fields)
    return b"\n".join(lines)


def empty_column(rng, body):
    lines = body.split(b"\n")
    j = rng.randrange(len(_fields(lines[0])))
    out = []
    for n, line in enumerate(lines):
        fields = _fields(line)
        if j < len(fields) and n > 0:
            fields[j] = rng.choice([b"", b"7"])  # empty or constant
        out.append(b",".join(fields))
    return b"\n".join(out)


def header_damage(rng, body):
    header, _, rest = body.partition(b"\n")
    return rng.choice([
        rest,  # no header: columns by position
        header + b"\n" + header + b"\n" + rest,  # the header twice
        header.replace(b"sensor_1", b"sensor_0") + b"\n" + rest,  # duplicate names
        header.replace(b"sensor_3", b"") + b"\n" + rest,  # an unnamed column
        header + b"\n",  # header only
        header.replace(b"sensor_2", b"label") + b"\n" + rest,  # a numeric column that becomes the label
        b"\xef\xbb\xbf" + body,  # BOM
        b"\xef\xbb\xbf\xef\xbb\xbf" + body,  # two BOMs
        b"\n\n   \n" + body,  # blank lines first
    ])


def odd_bytes(rng, body):
    pos = rng.randrange(len(body))
    return body[:pos] + rng.choice([b"\x00", b"\x00" * 50, b"\xff\xfe", b"\x80", b"\xc3", b"\x1a", b"\x0b\x0c"]) + body[pos:]


def long_line(rng, body):
    lines = body.split(b"\n")
    i = rng.randrange(1, len(lines))
    lines[i] = rng.choice([b"1," * 5000 + b"1", b"9" * 100_000, b'"' + b"x" * 70_000 + b'"'])
    return b"\n".join(lines)


def compress(rng, body):
    data = gzip.compress(body)
    return data if rng.random() < 0.6 else data[: rng.randrange(2, len(data))]


def tiny(rng, body):
    lines = body.split(b"\n")
    return b"\n".join(lines[: rng.randint(1, 4)])


# The generators that found issue 23's silent wrong answers and memory blow-ups (D1, D2, D13, D14).


def trailing_delimiter(rng, body):
    """A delimiter at the end of every row (spreadsheet and ERP exports), sometimes of the header too."""
    header, _, rest = body.partition(b"\n")
    rows = [ln + b"," if ln else ln for ln in rest.split(b"\n")]
    return header + (b"," if rng.random() < 0.5 else b"") + b"\n" + b"\n".join(rows)


def header_delimiter(rng, body):
    """The header written with another delimiter than the rows."""
    header, _, rest = body.partition(b"\n")
    return header.replace(b",", rng.choice([b";", b"\t"])) + b"\n" + rest


def header_quote(rng, body):
    """An unbalanced quote in the header."""
    header, _, rest = body.partition(b"\n")
    names = header.split(b",")
    i = rng.randrange(len(names))
    names[i] = b'"' + names[i]
    return b",".join(names) + b"\n" + rest


def extra_values(rng, body):
    """Rows with more values than the header."""
    lines = body.split(b"\n")
    for i in rng.sample(range(1, len(lines)), k=min(len(lines) - 1, rng.randint(1, 3))):
        if lines[i]:
            lines[i] += b"," + b",".join(rng.choice([b"1", b"", b"x"]) for _ in range(rng.randint(1, 4)))
    return b"\n".join(lines)


def very_long_line(rng, body):
    """A line past limits.MAX_LINE_BYTES, or more columns than limits.MAX_COLUMNS."""
    lines = body.split(b"\n")
    i = rng.randrange(len(lines))
    lines[i] = rng.choice([b"1.5," * (MAX_LINE_BYTES // 4 + 1), b",".join([b"1"] * (MAX_COLUMNS + 1))])
    return b"\n".join(lines)


def mostly_empty(rng, body):
    """A column with only a few values left (99.5% empty, or more)."""
    lines = body.split(b"\n")
    j = rng.randrange(1, len(_fields(lines[0])))
    for n in range(1, len(lines)):
        fields = _fields(lines[n])
        if j < len(fields) and n % 200:
            fields[j] = b""
        lines[n] = b",".join(fields)
    return b"\n".join(lines)


def repeated_header(rng, body):
    """Concatenated files (the header again inside the data), or two gzip members (`cat a.gz b.gz`)."""
    if rng.random() < 0.5:
        return gzip.compress(body) + gzip.compress(body)
    return body + (b"" if body.endswith(b"\n") else b"\n") + body


STRUCTURE = [trailing_delimiter, header_delimiter, header_quote, extra_values, very_long_line, mostly_empty,
             repeated_header]
MUTATORS = [truncate, byte_flips, huge_numbers, nan_and_inf, stray_words, wrong_delimiter, line_endings,
            quoted_newlines, column_count, empty_column, header_damage, odd_bytes, long_line, tiny, *STRUCTURE]


def mutate(rng: random.Random, body: bytes) -> tuple[bytes, list[str]]:
    picked = rng.sample(MUTATORS, k=rng.choice([1, 1, 2, 3]))
    if compress not in picked and rng.random() < 0.05:
        picked.append(compress)
    for fn in picked:
        try:
            body = fn(rng, body)
        except (ValueError, IndexError):  # a mutator that needs more than what is left (e.g. after a truncation)
            pass
    return body, [fn.__name__ for fn in picked]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, dataset) -> list[tuple[Path, list[str]]]:
    folder = tmp_path_factory.mktemp("fuzz")
    base = dataset["test_frame"].drop(columns=["label"]).iloc[:200].to_csv(index=False, float_format="%.5f").encode()
    rng = random.Random(SEED)
    files = []
    for i in range(DETECT_RUNS):
        body, how = mutate(rng, base)
        path = folder / f"case{i:03d}{rng.choice(['.csv', '.txt', '.csv', '.dat'])}"
        path.write_bytes(body)
        files.append((path, how))
    return files


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"{token} in JSON")
    return json.loads(text, parse_constant=refuse)


def outcome_problem(code, out: str, err: str) -> str | None:
    """What is wrong with one run (None: nothing): success prints strict JSON, failure one `error:` line."""
    if "Traceback" in out + err:
        return "traceback:\n" + err[-2000:]
    if code == 0:
        try:
            out.strip() and _strict(out)
        except ValueError as exc:
            return f"stdout is not strict JSON: {exc}"
        return None
    lines = err.strip("\n").splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"exit {code} with {len(lines)} stderr line(s):\n{err[-2000:]}"
    return None


def run_in_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = anomaly_cli.main(argv)
    except BaseException as exc:  # SystemExit included: our arguments are valid, so argparse has nothing to say
        return -1, out.getvalue(), err.getvalue() + "Traceback (raised)\n" + "".join(
            traceback.format_exception(exc))[-2000:]
    return code, out.getvalue(), err.getvalue()


def test_fuzzed_files_through_detect_and_train(corpus, trained, trained_window, tmp_path):
    started = time.monotonic()
    outcomes = {"ok": 0, "refused": 0}
    problems = []
    stores = [trained["root"], trained_window["root"]]
    for i, (path, how) in enumerate(corpus):
        output = tmp_path / f"out{i}{['.csv', '.json', '.jsonl'][i % 3]}"
        code, out, err = run_in_process(["detect", "--data", str(path), "--model-dir", str(stores[i % 2]), "--json",
                                         "--max-results", "5", "--output", str(output)])
        problem = outcome_problem(code, out, err)
        outcomes["ok" if code == 0 else "refused"] += 1
        if problem is None and code == 0 and output.suffix == ".json":
            try:
                _strict(output.read_text())
            except ValueError as exc:
                problem = f"{output.name} is not strict JSON: {exc}"
        if problem is None and code != 0 and output.exists():
            problem = "a refusal left a result file"
        if problem:
            problems.append(f"detect {path.name} {how}: {problem}")
        if i < TRAIN_RUNS:
            code, out, err = run_in_process(["train", "--data", str(path), "--model-dir", str(tmp_path / "models"),
                                             "--epochs", "1", "--window", "1" if i % 3 else "4", "--quiet", "--json",
                                             "--validation-split", "0"])
            problem = outcome_problem(code, out, err)
            if problem:
                problems.append(f"train {path.name} {how}: {problem}")
    assert not problems, f"{len(problems)} problem(s) (seed {SEED}):\n" + "\n\n".join(problems[:5])
    leftovers = [p.name for p in tmp_path.rglob(".*")]
    assert leftovers == [], leftovers  # no temporary file or folder survives, whatever happened
    # Both outcomes occur: the corpus is neither all-broken nor all-harmless.
    assert outcomes["ok"] > 30 and outcomes["refused"] > 30, outcomes
    print(f"fuzz: {len(corpus)} detect + {TRAIN_RUNS} train runs in process, {outcomes}, "
          f"{time.monotonic() - started:.1f}s")


def test_fuzzed_files_through_the_real_command_line(corpus, trained, tmp_path):
    rng = random.Random(SEED + 1)
    sample = rng.sample(corpus, SUBPROCESS_RUNS)

    def run(case):
        path, how = case
        detect = run_cli("detect.py", "--data", path, "--model-dir", trained["root"], "--json", "--max-results", "3")
        train = run_cli("train.py", "--data", path, "--model-dir", tmp_path / "models", "--epochs", "1", "--window",
                        "1", "--quiet", "--json")
        return (path.name, how), detect, train

    problems = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for what, detect, train in pool.map(run, sample):
            for kind, proc in (("detect", detect), ("train", train)):
                problem = outcome_problem(proc.returncode, proc.stdout, proc.stderr)
                if problem:
                    problems.append(f"{kind} {what}: {problem}")
    assert not problems, "\n\n".join(problems)


STRUCTURE_RUNS = 12  # per generator: the whole test takes a few seconds


def _expected(name: str) -> str:
    """What a generator's file must give: the clean file's numbers ("same"), twice over ("twice"), the clean
    file less its mostly empty column ("sparse"), or a one-line refusal ("refused")."""
    return {"trailing_delimiter": "same", "repeated_header": "twice", "mostly_empty": "sparse"}.get(name, "refused")


def test_structure_generators_never_shift_or_invent_values(tmp_path, dataset, trained):
    """Issue 23's generators one at a time, with an oracle: a file either gives exactly the clean file's values
    (columns in place, no header read as a row, no column made up by interpolation) or is refused in one line,
    quickly. Detection agrees with the clean file wherever the table does."""
    started = time.monotonic()
    base = dataset["test_frame"].drop(columns=["label"]).iloc[:400].to_csv(index=False, float_format="%.5f").encode()
    (tmp_path / "clean.csv").write_bytes(base)
    clean = data.read_table(tmp_path / "clean.csv")
    store = ModelStore(trained["root"])
    clean_detect = service.detect(str(tmp_path / "clean.csv"), version="v1", store=store)
    rng = random.Random(SEED)
    problems = []
    for gen in STRUCTURE:
        for run in range(STRUCTURE_RUNS):
            path = tmp_path / f"{gen.__name__}{run}.csv"
            path.write_bytes(gen(rng, base))
            want = _expected(gen.__name__)
            t0 = time.monotonic()
            try:
                table = data.read_table(path)
            except DataError as exc:
                if want != "refused" or len(str(exc).splitlines()) != 1:
                    problems.append(f"{path.name}: refused ({exc})")
                continue
            finally:
                if time.monotonic() - t0 > 5:
                    problems.append(f"{path.name}: {time.monotonic() - t0:.1f}s")
            if want == "refused":
                problems.append(f"{path.name}: accepted with features {table.features}")
                continue
            if want == "sparse":
                sparse = set(table.report.get("mostly_empty_columns", {}))
                keep = [i for i, f in enumerate(clean.features) if f not in sparse]
                ok = len(sparse) == 1 and table.features == [clean.features[i] for i in keep] and np.array_equal(
                    table.X, clean.X[:, keep])
            else:
                expect = np.vstack([clean.X, clean.X]) if want == "twice" else clean.X
                ok = table.features == clean.features and np.array_equal(table.X, expect)
                if ok and run < 3:  # detection reads the same file the same way
                    result = service.detect(str(path), version="v1", store=store)
                    ok = result["total_rows"] == len(expect) and (
                        want == "twice" or result["anomaly_count"] == clean_detect["anomaly_count"])
            if not ok:
                problems.append(f"{path.name}: silently different ({table.features}, {table.report})")
    assert not problems, f"{len(problems)} problem(s) (seed {SEED}):\n" + "\n".join(problems[:10])
    assert time.monotonic() - started < 60
