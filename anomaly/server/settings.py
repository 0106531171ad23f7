"""The server settings, one object for `anomaly serve` (HTTP, SSE, Streamable HTTP) and `anomaly mcp` (stdio).

Read from the environment (what MCP clients configure: `command`, `args`, `env`) and overridden by flags:

    ANOMALY_MODEL_DIR      model store (default: models)
    ANOMALY_DATA_ROOTS     folders clients may read data from, separated by the OS path separator (':' on
                           Linux/macOS, ';' on Windows) or a JSON list (default: the working directory)
    ANOMALY_RESULTS_DIR    where result CSVs are written (default: a per-user data folder, e.g.
                           ~/.local/share/anomaly/results: an MCP client may start the server anywhere, even in /)
    ANOMALY_API_TOKEN      bearer token required on every HTTP route (serve only; never printed; also read
                           from ANOMALY_TOKEN or from the file --token-file names)
    ANOMALY_DEVICE, ANOMALY_HOST, ANOMALY_PORT, ANOMALY_WORKERS, ANOMALY_LOG_LEVEL, ANOMALY_LOG_JSON, ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..errors import AnomalyError
from .security import Access


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANOMALY_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="address to bind; a non-loopback one needs a token")
    port: int = Field(3001, ge=0, le=65535, description="port to listen on")
    data_roots: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [os.getcwd()], min_length=1,
        description="folders clients may read data files from (default: the working directory)")
    model_dir: str = Field("models", description="model store; artifacts are only loaded from here")
    results_dir: str = Field(default_factory=lambda: default_results_dir(),
                             description="where per-row result CSVs are written (default: a per-user data folder)")
    api_token: SecretStr | None = Field(None, description="bearer token required on every route")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra Host header values to accept, e.g. a DNS name")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra browser Origins to accept, e.g. https://dash.example")
    max_upload_mb: float = Field(64, gt=0, description="largest HTTP request body (413 above)")
    max_upload_decompressed_mb: float = Field(256, gt=0, description="largest upload once decompressed (a gzip "
                                              "body; 413 above)")
    mcp_max_sessions: int = Field(1000, ge=1, le=100_000, description="open MCP Streamable HTTP sessions; at the "
                                  "cap, a new client replaces the session idle the longest")
    mcp_session_timeout: float = Field(600, gt=0, description="seconds an idle MCP Streamable HTTP session is kept")
    workers: int = Field(2, ge=1, le=256, description="concurrent scoring threads")
    train_workers: int = Field(1, ge=1, le=64, description="concurrent trainings")
    device: str = Field("auto", description="where trainings and detections run unless a call names another: "
                        "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    header_timeout: float = Field(10.0, gt=0, description="seconds a client has to send a request's headers")
    sse_ping: float = Field(15.0, gt=0, description="seconds between keep-alive comments on an SSE stream")

    @field_validator("data_roots", "allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """An environment value: a JSON list, or paths joined with the OS path separator."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(os.pathsep) if part]
        return value

    @field_validator("data_roots")
    @classmethod
    def _folders(cls, roots: list[str]) -> list[str]:
        missing = [r for r in roots if not Path(r).expanduser().is_dir()]
        if missing:
            raise ValueError(f"{', '.join(missing)} is not a folder")
        return [str(Path(r).expanduser()) for r in roots]

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None

    def access(self) -> Access:
        return Access(host=self.host, token=self.token, allowed_hosts=self.allowed_hosts,
                      allowed_origins=self.allowed_origins, max_body=int(self.max_upload_mb * (1 << 20)))


def default_results_dir() -> str:
    """A per-user data folder (platformdirs): never the working directory, which for a server an MCP client
    launches is wherever that client runs (`/` for a desktop app)."""
    import platformdirs

    return str(platformdirs.user_data_path("anomaly", appauthor=False) / "results")


# --- flags ---------------------------------------------------------------------------------------------------

# (field, flag, extra argparse options): the flags that override the environment, for serve and mcp.
COMMON_FLAGS = [
    ("data_roots", "--data-root", {"action": "append", "metavar": "DIR"}),
    ("model_dir", "--model-dir", {}),
    ("results_dir", "--results-dir", {}),
    ("device", "--device", {}),
    ("workers", "--workers", {"type": int}),
]
SERVE_FLAGS = [
    ("host", "--host", {}),
    ("port", "--port", {"type": int}),
    # --help prints defaults: the token's flag has none, so it never prints a secret from the environment
    ("api_token", "--token", {}),
    ("token_file", "--token-file", {"metavar": "FILE"}),
    ("allowed_hosts", "--allowed-host", {"action": "append", "metavar": "HOST[:PORT]"}),
    ("allowed_origins", "--allowed-origin", {"action": "append", "metavar": "ORIGIN"}),
    ("max_upload_mb", "--max-upload-mb", {"type": float}),
    ("max_upload_decompressed_mb", "--max-upload-decompressed-mb", {"type": float}),
    ("mcp_max_sessions", "--mcp-max-sessions", {"type": int}),
    ("mcp_session_timeout", "--mcp-session-timeout", {"type": float}),
    ("header_timeout", "--header-timeout", {"type": float}),
    ("sse_ping", "--sse-ping", {"type": float}),
]


def add_flags(p: argparse.ArgumentParser, flags: list) -> None:
    """One flag per setting; defaults stay unset (None) so that only what is given overrides the environment."""
    g = p.add_argument_group("settings (flags override ANOMALY_* environment variables)")
    for name, flag, extra in flags:
        if name == "token_file":
            g.add_argument(flag, dest=name, default=None, help="read the bearer token from this file (unlike --token, "
                           "not shown to other users by ps)", **extra)
            continue
        info = Settings.model_fields[name]
        env = "ANOMALY_" + name.upper()
        default = info.default if info.default_factory is None else None
        shown = "" if name == "api_token" or default is None else f"; default {default}"
        g.add_argument(flag, dest=name, default=None, help=f"{info.description} (${env}{shown})", **extra)


def from_args(args: argparse.Namespace, flags: list) -> Settings:
    """The settings: environment, then the flags that were given. A bad value is one `AnomalyError` line."""
    given = {name: getattr(args, name) for name, _, _ in flags if getattr(args, name, None) is not None}
    if "token_file" in given:
        path = given.pop("token_file")
        try:
            given["api_token"] = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AnomalyError(f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        if not given["api_token"]:
            raise AnomalyError(f"the token file {path} is empty")
    elif "api_token" in given:
        print("warning: --token is visible to every local user (ps, /proc); use --token-file FILE or the "
              "ANOMALY_TOKEN environment variable instead", file=sys.stderr)
    elif os.environ.get("ANOMALY_TOKEN") and not os.environ.get("ANOMALY_API_TOKEN"):
        given["api_token"] = os.environ["ANOMALY_TOKEN"]
    try:
        return Settings(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        raise AnomalyError(f"{name} (ANOMALY_{name.upper()}): {err['msg'].replace('Value error, ', '')}") from None
