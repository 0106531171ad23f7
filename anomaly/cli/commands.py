"""Command line: `anomaly train|detect|models ...` (also `python -m anomaly`, `train.py`, `detect.py`)."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import importlib.util
import signal
import sys
import threading
import warnings

from .. import jsonsafe, logs, memory, specs
from .._version import __version__
from ..errors import AnomalyError

# Subcommands that live in their own module: `add_arguments(parser)` and `run(args) -> int`.
PLUGIN_COMMANDS = {
    "evaluate": ("anomaly.cli.evaluate", "measure detection quality on a labelled suite"),
    "threshold": ("anomaly.cli.threshold", "set a new threshold on an existing version (writes a new version)"),
    "serve": ("anomaly.server.serve", "run the MCP server (SSE and Streamable HTTP) and the HTTP API"),
    "mcp": ("anomaly.server.stdio", "run the MCP server over stdio (for Claude Desktop and other local clients)"),
    "fleet": ("anomaly.cli.fleet", "train or score many series at once, on all cores or a Dask cluster"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not the empty ones ("default: None" says nothing)."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def add_artifact_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model artifacts (default: the versioned store)")
    g.add_argument("--version", help="model version name (detect: default the latest)")
    g.add_argument("--model-dir", default="models", help="artifact store folder")
    g.add_argument("--model", dest="model_path", help="explicit weights file (classic layout), e.g. models/model.pth")
    g.add_argument("--threshold", dest="threshold_path", help="explicit threshold.json path")
    g.add_argument("--config", dest="config_path", help="explicit model_config.json path")
    g.add_argument("--scaler", dest="scaler", help=f"scaler type ({', '.join(specs.SCALERS)}; train only; default "
                   f"{specs.TrainSpec.model_fields['scaler'].default}) or an explicit scaler.pkl path")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The data file and where the version goes; every training parameter comes from `TrainSpec`."""
    p.add_argument("--data", required=True, help="training CSV/TXT file (.gz ok) of mostly normal rows")
    add_artifact_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --version (or the explicit --model files)")
    specs.add_arguments(p, specs.TrainSpec)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_detect_arguments(p: argparse.ArgumentParser) -> None:
    """The data file and which model; every detection parameter comes from `DetectSpec`."""
    p.add_argument("--data", required=True, help="CSV/TXT file (.gz ok) to score")
    add_artifact_arguments(p)
    p.add_argument("--json", action="store_true", help="print the machine-readable summary as JSON")
    p.add_argument("--top", type=int, default=10, help="top anomalies to print")
    specs.add_arguments(p, specs.DetectSpec)


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --precision, as `TrainSpec` defines them (for commands of their own, e.g. evaluate)."""
    specs.add_arguments(p, specs.TrainSpec, only=("device", "precision"))


def add_logging_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logging")
    g.add_argument("--log-level", default=None, choices=logs.LEVELS,
                   help="log messages at this level and above to stderr (default: warning; ANOMALY_LOG_LEVEL)")
    g.add_argument("--log-json", action="store_true", default=None,
                   help="one JSON object per log line (for log collectors; ANOMALY_LOG_JSON)")


def _store(args):
    from ..store import ModelStore
    return ModelStore(args.model_dir)


def _explicit_paths(args, training: bool):
    from ..store import ArtifactPaths
    scaler_path = args.scaler if args.scaler and args.scaler not in specs.SCALERS else None
    if training and scaler_path and not scaler_path.endswith((".pkl", ".joblib")) and "/" not in scaler_path:
        # a mistyped scaler type must not become a file name (and put the whole model in the current folder)
        raise AnomalyError(f"unknown scaler {scaler_path!r}; choose one of {', '.join(specs.SCALERS)} "
                           "(or give a scaler.pkl path)")
    given = [args.model_path, args.config_path, args.threshold_path, scaler_path]
    if not any(given):
        return None
    # files the user named on their own command line: a classic model without scaler_affine may use its pickle
    return ArtifactPaths.explicit(args.model_path, args.config_path, args.threshold_path, scaler_path, allow_pickle=True)


def cmd_train(args) -> int:
    from .. import service

    # every training parameter is checked here, before the data is read or a bar is drawn
    spec = specs.parse(specs.TrainSpec, **_spec_args(args, specs.TrainSpec),
                       **({"scaler": args.scaler} if args.scaler in specs.SCALERS else {}))
    paths = _explicit_paths(args, training=True)
    bar = None  # opened after the first epoch: bad input then prints nothing but its one error line

    def progress(ev: dict) -> None:
        nonlocal bar
        if bar is None and not args.quiet:
            bar = _progress_bar(spec.epochs)
        if bar is not None:
            bar.update(1)
            post = {"loss": f"{ev['loss']:.4g}"}
            if ev.get("val_loss") is not None:
                post["val"] = f"{ev['val_loss']:.4g}"
            bar.set_postfix(post)

    try:
        result = service.train(args.data, spec, version=args.version, overwrite=args.overwrite, store=_store(args),
                               paths=paths, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(jsonsafe.dumps(result, indent=2))
        return 0
    rep = result["data_report"]
    print(f"Trained {result['model_type']} model version {result['version']} on {result['rows']} rows, "
          f"{len(result['features'])} feature(s): {', '.join(result['features'])}")
    if rep.get("indicator_columns"):
        names = rep["indicator_columns"]
        print(f"  0/1 state columns left out ({len(names)}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}); "
              "name them with --columns to score them too")
    if rep.get("constant_columns_kept"):
        print(f"  every feature is constant in training ({', '.join(rep['constant_columns'])}): the model flags "
              "any departure from those values")
    elif rep.get("constant_columns") or rep.get("empty_columns") or rep.get("ignored_columns"):
        print(f"  ignored columns: {', '.join(rep.get('ignored_columns', [])) or '-'}; constant (dropped): "
              f"{', '.join(rep.get('constant_columns', [])) or '-'}; empty: {', '.join(rep.get('empty_columns', [])) or '-'}")
    if rep.get("mostly_empty_columns"):
        from ..limits import MAX_MISSING_SHARE
        cols = ", ".join(f"{n} ({100 * s:.1f}% missing)" for n, s in rep["mostly_empty_columns"].items())
        print(f"  warning: column(s) more than {100 * MAX_MISSING_SHARE:g}% empty left out: {cols}")
    if rep.get("missing_values"):
        print(f"  missing values: {rep['missing_values']} ({rep['missing_policy']})")
    if result.get("closed_form"):
        print(f"  fitted in closed form (window {result['window']}, {result['components']} components), mean training "
              f"distance {result['final_loss']:.5g}, {result['train_seconds']:.1f}s on {result['device']}")
    else:
        print(f"  epochs: {result['epochs_run']} (best {result['best_epoch']}"
              f"{', stopped early' if result['stopped_early'] else ''}), loss {result['final_loss']:.5g}, "
              f"{result['train_seconds']:.1f}s on {result['device']} ({result['precision']})")
    choice = result.get("window_choice") or {}
    if choice.get("reason"):
        span = f" = {choice['window_span']}" if choice.get("window_span") else ""
        print(f"  window {choice['window']} rows{span}: {choice['reason']}")
        if choice.get("suggestion"):
            print(f"  note: {choice['suggestion']}")
    print(f"  threshold: {result['threshold']:.6g} ({result['threshold_method']} {result['threshold_params']}, "
          f"from {result['threshold_source']} rows)")
    print(f"  saved to {result['paths']['model'].rsplit('/', 1)[0]}")
    if result.get("plot"):
        print(f"  threshold plot written to {result['plot']}")
    return 0


def _spec_args(args, spec_cls) -> dict:
    """The parsed flags that are fields of `spec_cls`."""
    return {name: getattr(args, name) for name in specs.fields(spec_cls, cli=True) if hasattr(args, name)}


def _progress_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="training", unit="epoch", file=sys.stderr, leave=False, dynamic_ncols=True)


def cmd_detect(args) -> int:
    from .. import service

    spec = specs.parse(specs.DetectSpec, **_spec_args(args, specs.DetectSpec), return_details=args.json)
    paths = _explicit_paths(args, training=False)
    with memory.no_collection_until_progress(args.program) as progress:
        result = service.detect(args.data, spec, version=args.version, store=_store(args), paths=paths,
                                progress=progress)
    if args.json:
        print(jsonsafe.dumps(result, indent=2))
        return 0
    print_summary(result, args.top)
    return 0


def print_summary(result: dict, top: int = 10) -> None:
    rolling = result.get("threshold_window")
    threshold = (f"rolling {result['threshold_method']} over {rolling['window']} rows" if rolling and isinstance(rolling["window"], int)
                 else f"rolling {result['threshold_method']} over {rolling['window']}" if rolling
                 else f"{result['threshold']:.6g} ({result['threshold_method']})")
    expected = result.get("expected_ratio")
    print(f"Rows: {result['total_rows']}  anomalies: {result['anomaly_count']} ({100 * result['anomaly_ratio']:.2f}%"
          + (f"; normal data: ~{100 * expected:.2g}%" if expected is not None else "")
          + f") in {result['anomaly_segments']} incident(s)  threshold: {threshold}  model: {result['version']}")
    for warning in result.get("warnings", []):
        print(f"  warning: {warning}")
    if result["scored_rows"] < result["total_rows"]:
        print(f"  {result['total_rows'] - result['scored_rows']} row(s) have no score (window history or dropped rows)")
    miss = result.get("missing", {})
    if miss.get("missing_values"):
        print(f"  missing values: {miss['missing_values']} (filled {miss['values_filled']}, rows dropped {miss['rows_dropped']})")
    if result["top_anomalies"][:top]:
        from ..incidents import describe
        print("Incidents (strongest first; the peak row's driving features, expected: training's 1st-99th percentile):")
        for incident in result["top_anomalies"][:top]:
            print(f"  {describe(incident)}")
    if "metrics" in result:
        m = result["metrics"]
        parts = [f"{k} {m[k]:.3f}" for k in ("precision", "recall", "f1", "roc_auc", "pr_auc", "vus_pr", "best_f1") if k in m]
        if "pa_f1" in m:  # never alone: point adjustment flatters even a random score
            parts.append(f"point-adjusted F1 {m['pa_f1']:.3f} (uniform random score: {m['pa_f1_random']:.3f})")
        print(f"Against labels ({m.get('label_column')}): " + ", ".join(parts))
    if result.get("output"):
        print(f"Results written to {result['output']}")
    if result.get("plot"):
        print(f"Plot written to {result['plot']}")


def cmd_models(args) -> int:
    from .. import service

    store = _store(args)
    if args.action == "list":
        result = service.list_models(store)
        if args.json:
            print(jsonsafe.dumps(result, indent=2))
            return 0
        if not result["models"]:
            print(f"no models in {store.root}")
            return 0
        print(f"{'version':<24} {'type':<12} {'features':>8} {'window':>6} {'threshold':>12}  created")
        for m in result["models"]:
            mark = " *" if m.get("latest") else ""
            if m["status"] != "ok":
                print(f"{m['version']:<24} ({m['status']}: {m.get('error')})")
                continue
            print(f"{m['version']:<24} {m['model_type'] or '-':<12} {len(m['features'] or []):>8} {m['window'] or '-':>6} "
                  f"{m['threshold']:>12.6g}  {m['created']}{mark}")
        return 0
    if not args.name:
        raise AnomalyError(f"'models {args.action}' needs a version name")
    if args.action == "show":
        print(jsonsafe.dumps(service.model_info(args.name, store), indent=2))
    elif args.action == "delete":
        result = service.delete_model(args.name, store)
        print(jsonsafe.dumps(result) if args.json else f"deleted {result['deleted']}; latest is now {result['latest']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = argparse.ArgumentParser(prog="anomaly", description="Time-series anomaly detection on CSV/TXT data.",
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"anomaly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train", help="train a model on normal data", formatter_class=fmt))
    add_detect_arguments(sub.add_parser("detect", help="score a file with a trained model", formatter_class=fmt))
    m = sub.add_parser("models", help="list, show or delete model versions", formatter_class=fmt)
    m.add_argument("action", choices=("list", "show", "delete"))
    m.add_argument("name", nargs="?", help="version (show, delete)")
    m.add_argument("--model-dir", default="models", help="artifact store folder")
    m.add_argument("--json", action="store_true", help="JSON output")
    for name, (module, help_text) in PLUGIN_COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            p = sub.add_parser(name, help=help_text, formatter_class=fmt)
            importlib.import_module(module).add_arguments(p)
    for p in sub.choices.values():
        add_logging_arguments(p)
    return parser


COMMANDS = {"train": cmd_train, "detect": cmd_detect, "models": cmd_models}
ONE_SHOT = {"train", "detect"}  # commands that run once and exit, for `anomaly.memory`'s process tuning


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager stopping us): handled like Ctrl-C, so temporary files are removed."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None, program: bool | None = None) -> int:
    """Run a command; `program`: this process is the command (default: when `argv` is None, i.e. from the
    command line), so it may tune the process for a run that ends in exit (`anomaly.memory`)."""
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_json)
    # servers (`serve`, `mcp`) run on and give memory back: only the one-shot commands tune their process
    args.program = (argv is None if program is None else program) and args.command in ONE_SHOT
    if args.program:
        memory.reuse_freed_memory()
        atexit.register(memory.exit_without_collecting)
    try:
        with _sigterm_as_interrupt(), _warnings_to_log(args.command):
            if args.command in COMMANDS:
                return COMMANDS[args.command](args)
            return importlib.import_module(PLUGIN_COMMANDS[args.command][0]).run(args)
    except AnomalyError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line, whatever the cause
        return 2
    except Terminated:
        print(f"terminated; {_kept(args)}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"interrupted; {_kept(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # the system said no (a name too long, a full disk): one line, as for any user error
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print("error: " + " ".join(f"{exc.strerror or exc}{where}".split()), file=sys.stderr)
        return 2


SERVERS = {"serve", "mcp"}  # they log on their own terms, for as long as they run


@contextlib.contextmanager
def _warnings_to_log(command: str):
    """Python warnings (numpy's RuntimeWarnings on absurd values, a library's deprecations) go to the debug log:
    printed, they came before the one `error:` line, or cluttered a successful run's stderr."""
    if command in SERVERS:
        yield
        return
    with warnings.catch_warnings():
        warnings.showwarning = _log_warning
        yield


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    logs.log.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)


def _kept(args) -> str:
    """What an interrupted command leaves: a fleet keeps the series it finished, anything else nothing."""
    if args.command == "fleet":
        return "the series finished so far are kept (a rerun skips them)"
    return "nothing was saved"


def train_main() -> int:
    return main(["train", *sys.argv[1:]], program=True)


def detect_main() -> int:
    return main(["detect", *sys.argv[1:]], program=True)
