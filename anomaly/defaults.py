"""Default settings, in one place: the CLI, the service layer, the MCP tools and the HTTP API all read these."""

MODEL_TYPE = "dense"
WINDOW = 1  # rows per sample; 1 = each row on its own, as in the classic tool
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
MAX_RESULTS = 1000  # per-row results returned by the service (MCP/HTTP); the full table goes to a CSV
