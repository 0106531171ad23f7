"""The series of a fleet: one file of a folder or a glob, or the rows of a long-format file that share a series
column value (split into a temporary folder for the run)."""

from __future__ import annotations

import contextlib
import glob as globlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DataError, NotFound
from .files import remove_stale_files

DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
SPLIT_PREFIX = ".fleet-split-"
SPLIT_RE = re.compile(r"^\.fleet-split-(\d+)-")  # a copy of the user's data, split by series, of a writer's pid


@dataclass(frozen=True)
class Series:
    name: str  # the model version and the result file's stem
    path: str  # absolute, so a Dask worker on another machine opens the same (shared) file
    source: str = ""  # the user's long-format file, when `path` is the part of it split off ...
    part: str = ""  # ... for this series column value: "host=web-1"

    @property
    def origin(self) -> str:
        """Where the series came from, as the summary reports it."""
        return f"{self.source} [{self.part}]" if self.source else self.path

    def stamp(self) -> list[int]:
        """Size and modification time of the user's file: a changed file is not "done" any more."""
        st = os.stat(self.source or self.path)
        return [st.st_size, st.st_mtime_ns]


# --- finding the series ------------------------------------------------------------------------------------


def series_name(path: Path) -> str:
    """`host-1.csv.gz` -> `host-1`: the file name without its data and compression suffixes."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in DATA_SUFFIXES else name


def is_data_name(name: str) -> bool:
    """A series file's name: a data suffix (optionally .gz), not hidden."""
    return not name.startswith(".") and name.lower().removesuffix(".gz").endswith(DATA_SUFFIXES)


def _is_data_file(path: Path) -> bool:
    return path.is_file() and is_data_name(path.name)


def _from_files(files: Iterable[Path], where: str) -> list[Series]:
    series: dict[str, Series] = {}
    for f in sorted(files):
        name = series_name(f)
        if name in series:
            raise DataError(f"{Path(series[name].path).name} and {f.name} in {where} both give series {name!r}; "
                            "a series is one file")
        series[name] = Series(name, str(f.resolve()))
    if not series:
        raise DataError(f"no data files (.csv, .txt, .tsv, .dat, optionally .gz) in {where}")
    return list(series.values())


def folder_series(data_dir: str | os.PathLike) -> list[Series]:
    folder = Path(data_dir)
    if not folder.is_dir():
        raise NotFound(f"data folder {folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    return _from_files((p for p in folder.iterdir() if _is_data_file(p)), str(folder))


def glob_series(pattern: str) -> list[Series]:
    return _from_files((Path(p) for p in globlib.glob(pattern, recursive=True) if _is_data_file(Path(p))),
                       f"files matching {pattern!r}")


def _safe_name(value) -> str:
    """A series column value as a file and version name: other characters than letters, digits, '_', '-', '.'
    become '_' (a host name `db/1` must not become a path)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._") or "_"
    return name[:100]


def split_long_file(data_file: str | os.PathLike, series_column: str, dest: Path) -> list[Series]:
    """One CSV per distinct `series_column` value in `dest` (rows in file order, without that column).
    Values are kept as the text they are in the file, so a series scores exactly as its own file would."""
    from . import data

    p = data.check_file(data_file)
    fmt = data.sniff(p)
    if series_column not in fmt.names:
        raise DataError(f"series column {series_column!r} is not in {p.name} (columns: {', '.join(fmt.names)})")
    frame = data.read_text_frame(p, fmt)
    origin = str(p.resolve())
    groups = frame.groupby(series_column, sort=False, dropna=False)
    names: dict[str, object] = {}
    series = []
    for value, rows in groups:
        name = _safe_name(value)
        if name in names:
            raise DataError(f"series {value!r} and {names[name]!r} in column {series_column!r} both give the name "
                            f"{name!r}; rename one")
        names[name] = value
        target = dest / f"{name}.csv"
        rows.drop(columns=[series_column]).to_csv(target, index=False)
        series.append(Series(name, str(target.resolve()), origin, f"{series_column}={value}"))
    if not series:
        raise DataError(f"{p} holds no data rows")
    return series


@contextlib.contextmanager
def series_inputs(data_dir=None, *, data_file=None, glob: str | None = None, series_column: str | None = None,
                  series: list[Series] | None = None, work_dir: str | os.PathLike = ".") -> Iterator[list[Series]]:
    """The series of exactly one input; a long-format file is split into a temporary folder in `work_dir`
    (the model store or output folder: a path Dask workers see too), removed afterwards."""
    given = [x for x in (data_dir, data_file, glob, series) if x is not None]
    if len(given) != 1:
        raise DataError("give exactly one input: a data folder, a long-format file with a series column, or a glob")
    if series_column and data_file is None:
        raise DataError("--series-column goes with --data FILE (one long-format file)")
    if series is not None:
        yield list(series)
    elif data_dir is not None:
        yield folder_series(data_dir)
    elif glob is not None:
        yield glob_series(glob)
    elif not series_column:
        p = Path(data_file)
        yield [Series(series_name(p), str(p.resolve()))]  # one file without a series column: a fleet of one
    else:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        remove_stale_files(Path(work_dir), SPLIT_RE)  # what a killed run left
        split = Path(tempfile.mkdtemp(prefix=f"{SPLIT_PREFIX}{os.getpid()}-", dir=work_dir))
        try:
            yield split_long_file(data_file, series_column, split)
        finally:
            shutil.rmtree(split, ignore_errors=True)
