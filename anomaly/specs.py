"""One spec per operation: every parameter of training (`TrainSpec`) and detection (`DetectSpec`), with its
default, bounds and help, written once.

Everything else is derived from these two classes: the CLI flags (`add_arguments`), the MCP tool schemas and
`mcp_tool`'s signatures (`signature`), the HTTP request models (`request_model`). The service validates every
call against them (`parse`) before it reads a file or trains anything, so an unknown name (`epoch=5`) or an
out-of-range value (`percentile=100`) is refused the same way on every interface, naming the parameter.

Where a call comes from decides only *where* things go (version names, artifact paths, the server's path
policy); *what* is trained or detected is always one of these specs.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from . import defaults, thresholds
from .errors import DataError
from .incidents import check_span
from .models import MODEL_PARAMS, MODEL_TYPES
from .store import MAX_SMOOTH, MAX_WINDOW

SCALERS = ("standard", "minmax", "robust")
PRECISIONS = ("fp32", "bf16", "fp16")
MISSING_POLICIES = ("interpolate", "drop", "error")
MAX_RESULTS_LIMIT = 5000  # per-row results in one MCP/HTTP reply at most; the result CSV always has every row


@dataclass(frozen=True)
class Opt:
    """How a parameter appears outside Python (kept in the field's metadata, invisible to validation).

    group: the CLI's argument group. remote: offered over MCP and HTTP (False for parameters that write a
    file at a path of the caller's choosing). cli: offered as a flag (False where the CLI has its own
    spelling). flags: the flags when not --<name-with-dashes>. cli_default: the flag's default when
    the command line means something else by leaving it out."""

    group: str = "options"
    remote: bool = True
    cli: bool = True
    flags: tuple[str, ...] = ()
    cli_default: Any = "<field default>"  # a flag whose default differs (the CLI prints every row)


def _p(default: Any, help: str, opt: Opt | None = None, **bounds: Any) -> Any:
    """A field: default, help and bounds; `opt` travels in the field's metadata (not in its JSON schema)."""
    field = Field(default, description=help, **bounds)
    field.metadata.append(opt or Opt())
    return field


DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; default auto (a server: its own --device)"
PRECISION_HELP = ("fp32; bf16 (mixed precision through torch.autocast: CPU and recent GPUs) or fp16 (CUDA only)")
TIME_SPAN_HELP = ("rolling threshold: the version's threshold method over the preceding N rows (a number), or "
                  "over a time span such as 7d or 12h (needs a time column); default: the stored threshold")


def Span(name: str) -> Any:
    """A time span option (`10min`, `2h`), checked by `incidents.parse_span` when the spec is made."""
    return Annotated[str, AfterValidator(lambda v: check_span(v, name))]


class Spec(BaseModel):
    """Strict: no unknown names, no silent type coercion (`max_results="5"` is an error, not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def options(self, *names: str) -> dict:
        """The named fields as keyword arguments (all fields when no name is given)."""
        return {n: getattr(self, n) for n in (names or type(self).model_fields)}


Window = Union[Annotated[int, Field(ge=1, le=MAX_WINDOW)], Literal["auto"]]


class TrainSpec(Spec):
    """How a model is trained: architecture, optimisation, threshold, input handling, device."""

    # model
    model_type: Literal[tuple(MODEL_TYPES)] = _p(defaults.MODEL_TYPE, f"model type: {', '.join(MODEL_TYPES)}",
                                                 Opt("model"))
    window: Window | None = _p(defaults.WINDOW, f"rows per sample, 1..{MAX_WINDOW} (1 = each row on its own; 'auto' = "
                               "one period of the training rows; default: the model type's own, auto for pca and 32 "
                               "for the neural models)", Opt("model"))
    smooth: Annotated[int, Field(ge=1, le=MAX_SMOOTH)] | None = _p(
        None, f"rows in the centred moving mean of the scores, 1..{MAX_SMOOTH} (default 2 * window - 1; 1 = off)",
        Opt("model"))
    encoding_dim: Annotated[int, Field(ge=1, le=10_000)] | None = _p(
        None, "bottleneck size (dense) or latent size (vae); default: from the input width", Opt("model"))
    hidden: list[Annotated[int, Field(ge=1, le=100_000)]] | None = _p(
        None, "hidden layer sizes, e.g. 64,32 (dense, vae: encoder sizes; lstm: state size; transformer: "
        "d_model[,ff_width]); default: from the input width", Opt("model"), min_length=1, max_length=16)
    layers: Annotated[int, Field(ge=1, le=64)] | None = _p(None, "stacked layers (lstm, transformer)", Opt("model"))
    heads: Annotated[int, Field(ge=1, le=64)] | None = _p(None, "attention heads (transformer)", Opt("model"))
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = _p(None, "dropout rate, 0 <= dropout < 1", Opt("model"))
    error: Literal["mse", "mae"] | None = _p(None, "forecast error (lstm): mse or mae", Opt("model"))
    samples: Annotated[int, Field(ge=1, le=10_000)] | None = _p(
        None, "latent draws for the reconstruction probability (vae)", Opt("model"))
    # training
    epochs: int = _p(defaults.EPOCHS, "maximum epochs", Opt("training"), ge=1, le=100_000)
    batch_size: int = _p(defaults.BATCH_SIZE, "mini-batch size", Opt("training"), ge=1, le=1_000_000)
    learning_rate: float = _p(defaults.LEARNING_RATE, "Adam learning rate", Opt("training"), gt=0, le=10)
    validation_split: float = _p(defaults.VALIDATION_SPLIT, "last fraction of rows held out for early stopping "
                                 "(0 = none)", Opt("training"), ge=0, lt=1)
    patience: int = _p(defaults.PATIENCE, "epochs without validation improvement before stopping",
                       Opt("training"), ge=0, le=100_000)
    seed: int = _p(defaults.SEED, "random seed (same seed + data = same weights)", Opt("training"),
                   ge=0, le=2**32 - 1)
    # threshold
    threshold_method: Literal[tuple(thresholds.METHODS)] = _p(
        defaults.THRESHOLD_METHOD, f"{', '.join(m for m in thresholds.METHODS if m not in thresholds.NEEDS_LABELS)}; "
        f"with labels: {', '.join(sorted(thresholds.NEEDS_LABELS))}", Opt("threshold"))
    percentile: float = _p(defaults.PERCENTILE, "percentile of normal scores, 0 < p < 100 (percentile method)",
                           Opt("threshold"), gt=0, lt=100)
    k: Annotated[float, Field(gt=0, le=1000)] | None = _p(
        None, "k for meanstd (mean + k*std, default 3) or iqr (Q3 + k*IQR, default 1.5)", Opt("threshold"))
    risk: Annotated[float, Field(gt=0, lt=1)] | None = _p(
        None, "pot: probability that a normal row exceeds the threshold (default 1e-3)", Opt("threshold"))
    labels_file: str | None = _p(None, "0/1 labels, one per training row (a 'label' column or a single-column "
                                 "file), for best-f1 / midpoint", Opt("threshold", flags=("--labels",)))
    plot: str | None = _p(None, "write a PNG: the calibration errors, their histogram and density, every "
                          "label-free method's threshold and the fraction of rows each flags",
                          Opt("threshold", remote=False))
    # data
    columns: list[str] | None = _p(None, "feature columns, comma-separated (default: all numeric)", Opt("data"),
                                   min_length=1)
    label_column: str | None = _p(None, "column of 0/1 labels (never a feature; default: a column named 'label')",
                                  Opt("data"))
    missing: Literal[MISSING_POLICIES] = _p(defaults.MISSING, "missing values: interpolate (edges filled), drop "
                                            "rows, or error", Opt("data"))
    keep_constant: bool = _p(False, "keep columns that are constant in training", Opt("data"))
    scaler: Literal[SCALERS] = _p(defaults.SCALER, f"scaler type: {', '.join(SCALERS)}",
                                  Opt("data", cli=False))  # the CLI's --scaler also takes a scaler.pkl path
    # device
    device: str | None = _p(None, DEVICE_HELP, Opt("device"), max_length=64)
    precision: Literal[PRECISIONS] = _p("fp32", PRECISION_HELP, Opt("device"))

    # Which fields the network of each kind uses (the others are ignored by `models.make_config`).
    MODEL_PARAMS: ClassVar[tuple[str, ...]] = MODEL_PARAMS

    def threshold_params(self) -> dict:
        """The options the threshold method takes (others are not stored with it)."""
        from .thresholds import threshold_params

        return threshold_params(self.threshold_method, self.percentile, self.k,
                                **({"risk": self.risk} if self.risk is not None else {}))


class DetectSpec(Spec):
    """How a file is scored and what is reported."""

    per_feature: bool = _p(False, "add each feature's share of the error to the output rows", Opt("output"))
    max_results: Annotated[int, Field(ge=0)] | None = _p(
        defaults.MAX_RESULTS, f"cap on per-row results in the summary, anomalies first (null = every row; "
        f"MCP/HTTP: at most {MAX_RESULTS_LIMIT}; MCP's default {defaults.MCP_MAX_RESULTS} keeps the reply under "
        f"{defaults.MCP_REPLY_CHARS:,} characters; the CLI's --json: every row unless given); every row is in "
        "the output file", Opt("output", cli_default=None))
    return_details: bool = _p(True, "include per-row results in the summary", Opt("output", cli=False))
    output: str | None = _p(None, "write every row with reconstruction_error and is_anomaly (.csv keeps the input "
                            "columns; .json / .jsonl write JSON)", Opt("output", remote=False, flags=("--output", "-o")))
    plot: str | None = _p(None, "write a PNG: features over time, anomalies, labelled windows, score vs threshold",
                          Opt("output", remote=False))
    time_column: str | None = _p(None, "column that says when each row happened, reported with every anomaly "
                                 "(default: a column named timestamp, time, date or datetime)", Opt("data"))
    threshold_window: Annotated[int, Field(ge=1)] | str | None = _p(None, TIME_SPAN_HELP, Opt("threshold"))
    follow_level: bool = _p(True, "when this file scores higher than training all over (median, spread), move the "
                            "threshold up with it: its peaks are flagged, not every row; off: the stored threshold "
                            "(ignored with threshold_window)", Opt("threshold"))
    min_duration: Annotated[int, Field(ge=1)] | Span("min_duration") = _p(
        1, "shortest incident: rows (a number) or a time span such as 10min (needs a time column), from its first "
        "row to its last (one row: 0min); a shorter one is not reported and its rows are not flagged",
        Opt("incidents"))
    merge_gap: Annotated[int, Field(ge=0)] | Span("merge_gap") = _p(
        0, "incidents at most this far apart become one, the rows between them flagged: quiet rows between (a "
        "number) or the time from the last row of one to the first of the next (30min); applied before "
        "min_duration", Opt("incidents"))
    label_column: str | None = _p(None, "column of 0/1 labels for precision/recall/F1 (default: a column named "
                                  "'label')", Opt("data"))
    missing: Literal[MISSING_POLICIES] = _p(defaults.MISSING, "missing values: interpolate (edges filled), drop "
                                            "rows, or error", Opt("data"))
    device: str | None = _p(None, DEVICE_HELP, Opt("device"), max_length=64)
    precision: Literal[PRECISIONS] = _p("fp32", PRECISION_HELP, Opt("device"))


# --- validation --------------------------------------------------------------------------------------------


def parse(spec_cls: type[Spec], spec: Spec | None = None, strict: bool = True, **params: Any) -> Spec:
    """`spec_cls(**params)` (over `spec` when given), with pydantic's errors turned into one `DataError` line
    that names the parameter, e.g. "percentile must be less than 100, got 100". `strict=False` converts
    what it can (numpy numbers, tuples), for values that did not come from a user's keyboard."""
    base = {} if spec is None else spec.model_dump(exclude_unset=True)
    try:
        spec = spec_cls.model_validate(base | params, strict=strict)
    except ValidationError as exc:
        raise DataError(describe(exc, spec_cls)) from None
    if getattr(spec, "plot", None):
        from .plotting import require_matplotlib
        require_matplotlib()
    return spec


def describe(exc: ValidationError, spec_cls: type[BaseModel]) -> str:
    """The first problem of a validation error, in words, naming the parameter."""
    known = list(spec_cls.model_fields)
    problems = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}; known: {', '.join(known)}")
            continue
        msg = err["msg"]
        msg = msg.replace("Input should be", "must be").replace("Value error, ", "")
        if msg.startswith("List should"):
            msg = "must be a list" + msg[len("List should"):].replace("have", "with")
        value = err.get("input")
        got = (repr(value) if isinstance(value, str) else str(value))[:40]
        problems.append(f"{name} {msg[0].lower() + msg[1:]}, got {got}")
    # union types report one problem per member; the first one says it (the others repeat the name)
    seen, unique = set(), []
    for p in problems:
        key = p.split(" ", 1)[0]
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return "; ".join(unique)


def fields(spec_cls: type[Spec], remote: bool | None = None, cli: bool | None = None) -> dict:
    """{name: FieldInfo} of a spec, optionally only those offered remotely / on the command line."""
    out = {}
    for name, info in spec_cls.model_fields.items():
        opt = opt_of(info)
        if remote is not None and opt.remote != remote:
            continue
        if cli is not None and opt.cli != cli:
            continue
        out[name] = info
    return out


def opt_of(info) -> Opt:
    return next((m for m in info.metadata if isinstance(m, Opt)), Opt())


# --- derived interfaces ------------------------------------------------------------------------------------


def annotated(info) -> Any:
    """The field's type with its bounds and help, for a function parameter (no default inside)."""
    meta = [m for m in info.metadata if not isinstance(m, Opt)]
    return Annotated[(info.annotation, *meta, Field(description=info.description))]


def parameters(spec_cls: type[Spec], remote: bool = True, overrides: dict | None = None) -> list[inspect.Parameter]:
    """Keyword-only parameters, one per field, for a derived function signature (MCP tools, `mcp_tool`).
    `overrides` {name: (annotation, default)} replaces a field's (a server's device default is its own)."""
    out = []
    for name, info in fields(spec_cls, remote=remote if remote else None).items():
        ann, default = (overrides or {}).get(name, (annotated(info), info.default))
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default))
    return out


def signature(fn, leading: list[inspect.Parameter], spec_cls: type[Spec], trailing: list[inspect.Parameter] = (),
              remote: bool = True, returns: Any = inspect.Signature.empty, defaults: dict | None = None):
    """Give `fn` (which takes **kwargs) the explicit signature: `leading`, then the spec's fields, then
    `trailing`. MCP's SDK and `help()` read it; annotations too, for tools that inspect type hints.
    `defaults` {name: value}: an interface's own default for a field (MCP replies hold fewer rows)."""
    fields_ = spec_cls.model_fields
    overrides = {n: (annotated(fields_[n]), v) for n, v in (defaults or {}).items()}
    params = [*leading, *parameters(spec_cls, remote, overrides), *trailing]
    fn.__signature__ = inspect.Signature(params, return_annotation=returns)
    fn.__annotations__ = {p.name: p.annotation for p in params} | (
        {"return": returns} if returns is not inspect.Signature.empty else {})
    return fn


def request_model(name: str, spec_cls: type[Spec], base: type[BaseModel], **extra: Any) -> type[BaseModel]:
    """An HTTP request body: `base`'s fields, `extra` ones, and the spec's remote fields (unknown keys refused)."""
    specs = {n: (info.annotation, info) for n, info in fields(spec_cls, remote=True).items()}
    return create_model(name, __base__=base, **extra, **specs)


def add_arguments(parser: argparse.ArgumentParser, spec_cls: type[Spec], only: tuple = ()) -> None:
    """One flag per field (--name-with-dashes), typed, with the field's default and help, in argument groups
    named by the fields' `Opt.group`. `only`: just these fields."""
    groups: dict[str, Any] = {}
    for name, info in fields(spec_cls, cli=True).items():
        if only and name not in only:
            continue
        opt = opt_of(info)
        group = groups.get(opt.group) or groups.setdefault(opt.group, parser.add_argument_group(opt.group))
        flags = opt.flags or ("--" + name.replace("_", "-"),)
        default = info.default if opt.cli_default == Opt.cli_default else opt.cli_default
        kwargs: dict[str, Any] = {"dest": name, "help": info.description, "default": default}
        if info.annotation is bool:  # on by default: --name and --no-name
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kwargs["type"], choices = _converter(name, info.annotation)
            if choices:  # shown, not enforced by argparse: the spec refuses a wrong one in one error line
                kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        group.add_argument(*flags, **kwargs)


def _converter(name: str, annotation: Any) -> tuple:
    """(argparse type, choices) for a field type: numbers, choices, comma lists, 'auto' windows."""
    members = [a for a in (get_args(annotation) if get_origin(annotation) in (Union, _UnionType) else (annotation,))
               if a is not type(None)]
    literals = [v for m in members if get_origin(m) is Literal for v in get_args(m)]
    base = [_bare(m) for m in members if get_origin(m) is not Literal]
    if literals and not base:
        return str, literals
    if any(get_origin(m) is list for m in base):
        item = _bare(get_args(next(m for m in base if get_origin(m) is list))[0])
        return _list_of(name, item), None
    number = next((b for b in base if b in (int, float)), None)
    if number is not None:
        return _number_or(name, number, literals, str in base), None
    return str, None


def _bare(t: Any) -> Any:
    return get_args(t)[0] if get_origin(t) is Annotated else t


def _number_or(name: str, number: type, words: list, any_text: bool):
    def convert(value: str):
        if value in words:
            return value
        try:
            return number(value)
        except ValueError:
            if any_text:
                return value
            extra = f" or {' / '.join(repr(w) for w in words)}" if words else ""
            raise argparse.ArgumentTypeError(f"{name} takes a {'whole ' if number is int else ''}number{extra}, "
                                             f"got {value!r}") from None
    return convert


def _list_of(name: str, item: type):
    def convert(value: str):
        parts = [v.strip() for v in value.split(",") if v.strip()]
        try:
            return [item(v) for v in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated {item.__name__} values, "
                                             f"got {value!r}") from None
    return convert


_UnionType = type(int | None)
