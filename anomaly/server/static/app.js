// The dashboard: detection on a data file (chart of the series and the score with its threshold, anomalous
// segments highlighted, a table of segments), a training's loss curve as it trains, and a live channel's
// scores as they arrive. Everything goes through the server's HTTP API (api.js).
import { ApiError, getJSON, getToken, postFile, setToken, stream } from "./api.js";
import { drawChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const CHART_POINTS = 1500;
const LIVE_KEEP = 1000; // points the live chart shows
const LIVE_ROWS = 50; // flagged points the live table keeps

// --- messages and state ------------------------------------------------------------------------------------

function say(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function fail(err) {
  if (err.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) {
    say("This server needs a token: enter it above (it is kept for this tab only).", "error");
    $("token").focus();
  } else {
    say(err.message || String(err), "error");
  }
}

const fmt = (v, digits = 4) => (typeof v === "number" && Number.isFinite(v) ? String(+v.toPrecision(digits)) : "-");
const features = (list) => (list || []).map((f) => `${f.feature} ${Math.round(f.share * 100)}%`).join(", ");
// An incident's driving features in the data's own units: `mem 80.2, expected 61.3-63.9 (93%)`.
const drivers = (list) => (list || []).map((f) => f.feature + (f.value != null ? ` ${fmt(f.value)}` : "") +
  (f.expected ? `, expected ${fmt(f.expected[0])}-${fmt(f.expected[1])}` : "") +
  ` (${Math.round(f.share * 100)}%)`).join("; ");

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

// --- server, files and models ------------------------------------------------------------------------------

async function refresh() {
  say("");
  try {
    const health = await getJSON("/health");
    $("server-status").textContent = `server ${health.version}, device ${health.device}` +
      (getToken() ? " (token set)" : "");
  } catch (err) {
    $("server-status").textContent = "not connected";
    fail(err);
    return;
  }
  await Promise.all([loadFiles(), loadModels()]).catch(fail);
}

async function loadFiles() {
  const listing = await getJSON("/api/data");
  for (const id of ["data-file", "train-file"]) {
    const select = $(id);
    const keep = select.value;
    select.replaceChildren();
    if (id === "data-file") select.append(new Option("(choose a file, or upload one)", ""));
    for (const f of listing.files) select.append(new Option(f.path, f.path));
    if (keep && listing.files.some((f) => f.path === keep)) select.value = keep;
  }
}

async function loadModels(select = null) {
  const { models } = await getJSON("/api/models");
  const box = $("model-version");
  const keep = select || box.value;
  box.replaceChildren(new Option("(latest)", ""));
  for (const m of [...models].reverse()) {
    box.append(new Option(`${m.version} - ${m.model_type}, window ${m.window}`, m.version));
  }
  if (keep && models.some((m) => m.version === keep)) box.value = keep;
}

// --- detection ---------------------------------------------------------------------------------------------

let detectAbort = null;

async function runDetection(event) {
  event.preventDefault();
  const file = $("upload").files[0];
  const path = $("data-file").value;
  const version = $("model-version").value;
  if (!file && !path) {
    say("Choose a data file or upload one.", "error");
    return;
  }
  detectAbort?.abort();
  detectAbort = new AbortController();
  say("");
  $("run-detect").disabled = true;
  $("detect-progress").textContent = "scoring...";
  try {
    let summary;
    if (file) {
      summary = await postFile("/api/detect/upload", { ...(version && { version }), max_results: 0 }, file);
    } else {
      let flagged = 0;
      await stream("/api/detect/stream", {
        method: "POST", signal: detectAbort.signal,
        body: { file_path: path, ...(version && { version }), max_results: 0 },
        onEvent: (name, data) => {
          if (name === "anomaly") flagged += 1;
          else if (name === "progress") {
            $("detect-progress").textContent = `${data.rows_done} rows scored, ${flagged} anomalous`;
          } else if (name === "summary") summary = data;
          else if (name === "error") throw new Error(data.error);
        },
      });
    }
    if (!summary) throw new Error("the detection ended without a summary");
    $("detect-progress").textContent = `${summary.total_rows} rows in ${fmt(summary.seconds, 3)} s`;
    const params = { output: summary.output, points: CHART_POINTS, features: summary.features.join(",") };
    if (summary.time_column) params.time_column = summary.time_column;
    const series = await getJSON("/api/results/series", params);
    showDetection(summary, series, file ? file.name : path);
  } catch (err) {
    $("detect-progress").textContent = "";
    fail(err);
  } finally {
    $("run-detect").disabled = false;
  }
}

let lastDetection = null;

// Scores span orders of magnitude (a spike can be 1000x the threshold): drawn on a log scale unless unticked.
const log10 = (v) => (typeof v === "number" && v > 0 ? Math.log10(v) : null);

function showDetection(summary, series, name) {
  lastDetection = [summary, series, name];
  const section = $("detect-panel");
  section.dataset.anomalyCount = summary.anomaly_count;
  section.dataset.segmentCount = series.segment_count;
  $("detect-summary").textContent = `${name}: ${summary.anomaly_count} of ${summary.total_rows} rows anomalous ` +
    `(${fmt(summary.anomaly_ratio * 100, 3)}%) in ${summary.anomaly_segments} incident(s); ` +
    `model ${summary.version} (${summary.model_type}), threshold ${fmt(summary.threshold)}` +
    (summary.warnings?.length ? `. ${summary.warnings.join(" ")}` : "");

  const x = series.index;
  const times = series.time;
  const xFormat = times ? (v) => timeAt(x, times, v) : undefined;
  const severity = new Map(summary.top_anomalies.map((i) => [i.first_row, i.severity]));
  const bands = series.segments.map((s) => ({
    from: s.first_row, to: s.last_row,
    title: `rows ${s.first_row}-${s.last_row}${s.first_time ? ` (${s.first_time} - ${s.last_time})` : ""}, ` +
      `peak ${fmt(s.reconstruction_error)} at row ${s.index}` +
      (severity.get(s.first_row) != null ? `, severity ${severity.get(s.first_row)}` : ""),
    data: { first: s.first_row, last: s.last_row },
  }));
  drawChart($("series-chart"), {
    x, series: series.features.map((f) => ({ name: f, values: series.values[f] })), bands,
    xLabel: times ? series.time_column : "row", xFormat,
  });
  const marks = [];
  for (let i = 0; i < x.length && marks.length < 3000; i++) {
    if (series.is_anomaly[i]) {
      marks.push({ x: x[i], y: series.score[i], data: { index: x[i] }, title: `row ${x[i]}: ${fmt(series.score[i])}` });
    }
  }
  const logScale = $("log-score").checked;
  const scale = (v) => (logScale ? (Array.isArray(v) ? v.map(log10) : log10(v)) : v);
  drawChart($("score-chart"), {
    x, series: [{ name: `score (reconstruction error${logScale ? ", log scale" : ""})`, values: scale(series.score),
      color: "#111827" }],
    threshold: scale(series.threshold ?? summary.threshold), bands, xLabel: times ? series.time_column : "row",
    marks: marks.map((m) => ({ ...m, y: scale(m.y) })), xFormat,
    yFormat: logScale ? (v) => fmt(10 ** v, 2) : undefined,
  });
  segmentsTable(summary);
}

function timeAt(index, times, v) {
  let lo = 0;
  let hi = index.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (index[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  const t = times[lo] || "";
  return t.length > 16 ? t.slice(0, 16).replace("T", " ") : t;
}

function segmentsTable(summary) {
  const table = $("segments-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  const segments = [...summary.top_anomalies].sort((a, b) => a.first_row - b.first_row);
  segments.forEach((s, i) => {
    const row = body.insertRow();
    row.dataset.firstRow = s.first_row;
    row.dataset.lastRow = s.last_row;
    row.dataset.peakRow = s.index;
    cell(row, String(i + 1));
    cell(row, String(s.first_row));
    cell(row, String(s.last_row));
    cell(row, s.first_time ?? "-");
    cell(row, s.last_time ?? "-");
    cell(row, s.duration ?? `${s.rows} row${s.rows === 1 ? "" : "s"}`);
    cell(row, String(s.index));
    cell(row, fmt(s.reconstruction_error));
    cell(row, fmt(s.threshold));
    cell(row, s.severity ?? "-").className = "severity";
    cell(row, drivers(s.top_features));
  });
  $("segments-caption").textContent = segments.length
    ? `The ${segments.length} strongest of ${summary.anomaly_segments} incident(s), by position; severity 0-100 ` +
      "(how rare the peak is among the training scores); expected: the training data's 1st-99th percentile"
    : "No incidents";
  table.hidden = false;
}

// --- training ----------------------------------------------------------------------------------------------

async function runTraining(event) {
  event.preventDefault();
  const body = { data_file: $("train-file").value, model_type: $("model-type").value, epochs: +$("epochs").value };
  const version = $("train-version").value.trim();
  if (version) body.version = version;
  if (!body.data_file) {
    say("Choose a data file to train on.", "error");
    return;
  }
  const epochs = [];
  const loss = [];
  const val = [];
  const chart = $("loss-chart");
  const draw = () => drawChart(chart, {
    x: epochs, xLabel: "epoch", height: 200, integerX: true,
    series: [{ name: "loss", values: loss }, ...(val.some((v) => v !== null) ? [{ name: "val_loss", values: val }] : [])],
  });
  say("");
  $("run-train").disabled = true;
  $("train-progress").textContent = "starting...";
  chart.dataset.epochs = 0;
  try {
    await stream("/api/train/stream", {
      method: "POST", body,
      onEvent: (name, data) => {
        if (name === "epoch") {
          epochs.push(data.epoch);
          loss.push(data.loss);
          val.push(data.val_loss ?? null);
          chart.dataset.epochs = epochs.length;
          $("train-progress").textContent = `epoch ${data.epoch}/${data.epochs}: loss ${fmt(data.loss)}`;
          requestAnimationFrame(draw);
        } else if (name === "result") {
          $("train-progress").textContent = `saved ${data.version}: final loss ${fmt(data.final_loss)}, ` +
            `threshold ${fmt(data.threshold)}`;
          loadModels(data.version).catch(fail);
        } else if (name === "error") {
          $("train-progress").textContent = "";
          say(data.error, "error");
        }
      },
    });
  } catch (err) {
    $("train-progress").textContent = "";
    fail(err);
  } finally {
    $("run-train").disabled = false;
  }
}

// --- live --------------------------------------------------------------------------------------------------

let liveAbort = null;

async function watchLive(event) {
  event.preventDefault();
  liveAbort?.abort();
  const controller = new AbortController();
  liveAbort = controller;
  const channel = $("live-channel").value.trim();
  const idx = [];
  const score = [];
  const threshold = [];
  const flags = [];
  const chart = $("live-chart");
  const table = $("live-table");
  table.querySelector("tbody").replaceChildren();
  table.hidden = true;
  let pending = false;
  const draw = () => {
    pending = false;
    drawChart(chart, {
      x: idx, xLabel: "point", height: 200, integerX: true, threshold: threshold.length ? threshold : null,
      series: [{ name: `score (${channel})`, values: score, color: "#111827" }],
      marks: flags.map((i) => ({ x: i, y: score[idx.indexOf(i)], data: { index: i } })),
    });
  };
  $("live-stop").disabled = false;
  $("live-status").textContent = "connecting...";
  chart.dataset.points = 0;
  chart.dataset.flags = 0;
  try {
    await stream(`/api/live/${encodeURIComponent(channel)}/events`, {
      signal: controller.signal,
      onEvent: (name, data) => {
        if (name === "subscribed") {
          $("live-status").textContent = `watching ${channel}: POST points to /api/live/${channel}`;
          chart.dataset.subscribed = "1";
        } else if (name === "score") {
          idx.push(data.index);
          score.push(data.reconstruction_error);
          threshold.push(data.threshold);
          if (data.is_anomaly) {
            flags.push(data.index);
            flagRow(table, data);
          }
          if (idx.length > LIVE_KEEP) {
            const drop = idx.length - LIVE_KEEP;
            idx.splice(0, drop);
            score.splice(0, drop);
            threshold.splice(0, drop);
            while (flags.length && flags[0] < idx[0]) flags.shift();
          }
          chart.dataset.points = Number(chart.dataset.points) + 1;
          chart.dataset.flags = flags.length;
          $("live-status").textContent = `${channel}: point ${data.index}, score ${fmt(data.reconstruction_error)}`;
          if (!pending) {
            pending = true;
            requestAnimationFrame(draw);
          }
        } else if (name === "error") {
          say(data.error, "error");
        }
      },
    });
    $("live-status").textContent = "stream ended";
  } catch (err) {
    $("live-status").textContent = err.name === "AbortError" ? "stopped" : "";
    fail(err);
  } finally {
    if (liveAbort === controller) $("live-stop").disabled = true;
  }
}

function flagRow(table, data) {
  const body = table.querySelector("tbody");
  const row = body.insertRow(0);
  row.dataset.index = data.index;
  cell(row, String(data.index));
  cell(row, fmt(data.reconstruction_error));
  cell(row, fmt(data.threshold));
  cell(row, features(data.top_features));
  while (body.rows.length > LIVE_ROWS) body.deleteRow(-1);
  table.hidden = false;
}

// --- wiring ------------------------------------------------------------------------------------------------

function init() {
  $("token").value = getToken();
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken($("token").value.trim());
    refresh();
  });
  $("logout").addEventListener("click", () => {
    setToken("");
    $("token").value = "";
    refresh();
  });
  $("upload").addEventListener("change", () => {
    if ($("upload").files.length) $("data-file").value = "";
  });
  $("data-file").addEventListener("change", () => {
    if ($("data-file").value) $("upload").value = "";
  });
  $("detect-form").addEventListener("submit", runDetection);
  $("log-score").addEventListener("change", () => lastDetection && showDetection(...lastDetection));
  $("train-form").addEventListener("submit", runTraining);
  $("live-form").addEventListener("submit", watchLive);
  $("live-stop").addEventListener("click", () => liveAbort?.abort());
  document.body.dataset.ready = "1";
  refresh();
}

init();
