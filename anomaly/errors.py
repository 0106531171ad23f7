"""User-facing errors: every failure a user can cause is one of these, with a message that reads as one line."""


class AnomalyError(Exception):
    """Base class. The CLI prints `error: <message>` and exits 2; MCP returns isError; HTTP answers 4xx."""

    http_status = 400


class DataError(AnomalyError):
    """The input data cannot be used (missing or empty file, no numeric column, NaN policy, wrong columns)."""

    http_status = 422


class NotFound(AnomalyError):
    """A file or model version does not exist."""

    http_status = 404


class ArtifactError(AnomalyError):
    """A stored model version is corrupt or incomplete."""

    http_status = 409


class VersionExists(AnomalyError):
    """Training would overwrite an existing version."""

    http_status = 409


class PathNotAllowed(AnomalyError):
    """A path lies outside the allowed roots (server use)."""

    http_status = 403


class DeviceError(AnomalyError):
    """The asked-for device or precision is unknown or not available on this machine."""


MAX_MESSAGE = 1000  # characters of an error a server sends back (an MCP client drops a message over 1 MiB)


def message(exc: BaseException, limit: int = MAX_MESSAGE) -> str:
    """An error's text as one line of at most `limit` characters: what each edge (CLI, MCP, HTTP) sends, so an
    argument of megabytes repeated in a message never comes back in full."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 20] + f"... ({len(text)} characters)"
