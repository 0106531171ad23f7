"""Default settings, in one place: the CLI, the service layer, the MCP tools and the HTTP API all read these."""

# windowed PCA: ahead of TSB-AD's best cheap methods on every suite (docs/decisions/0001-windowed-pca-default.md)
MODEL_TYPE = "pca"
# Rows per sample. For the neural models 32 beat 1 on mean VUS-PR over the four benchmark suites; "auto" (one
# dominant period) scores higher still on strongly periodic data (UCR) but was not measured with the score
# smoothing on the other suites (docs/decisions/0010-neural-window-32-smoothed.md). 1 = each row on its own,
# as in the classic tool.
WINDOW = None  # the model type's own: "auto" (one period) for pca, 32 for the neural models
# Scores are smoothed over a centred span of 2 * window - 1 rows unless --smooth says otherwise
# (`smoothing.smooth_rows`): for the neural models it lifted mean VUS-PR above IsolationForest and PCA on NAB, SMAP
# and MSL (docs/decisions/0010-neural-window-32-smoothed.md); pca's overlapping windows need none.
EPOCHS = 100
BATCH_SIZE = 32
LEARNING_RATE = 0.001
VALIDATION_SPLIT = 0.1
PATIENCE = 10
SEED = 0
SCALER = "standard"
THRESHOLD_METHOD = "percentile"
PERCENTILE = 95.0
MISSING = "interpolate"
MAX_RESULTS = 1000  # per-row results returned by the service (HTTP, mcp_tool); the full table goes to a CSV
# An MCP run_detection reply is read by an LLM: by default it holds this many rows (anomalies first, each with
# its time and strongest features) and is at most MCP_REPLY_CHARS characters, JSON-RPC message and all
# (`summary.lean_reply`; 25 rows of 4 features with times take ~5,600 of them, segments and counts ~4,000).
MCP_MAX_RESULTS = 25
MCP_REPLY_CHARS = 12_000
