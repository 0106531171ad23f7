// The server's HTTP API from the browser: JSON calls and Server-Sent Events read through fetch (EventSource
// cannot send the Authorization header). The token lives in this tab's sessionStorage only.

const TOKEN_KEY = "anomaly-token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  const token = getToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function check(response) {
  if (response.ok) return response;
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  throw new ApiError(response.status, message);
}

export async function getJSON(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const response = await check(await fetch(url, { headers: headers() }));
  return response.json();
}

export async function postJSON(path, body) {
  const response = await check(await fetch(path, {
    method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
  }));
  return response.json();
}

export async function postFile(path, params, file) {
  const response = await check(await fetch(`${path}?${new URLSearchParams(params)}`, {
    method: "POST", headers: headers({ "Content-Type": "text/csv" }), body: file,
  }));
  return response.json();
}

// Read an SSE response: onEvent(name, data, id) for every event. Resolves when the stream ends; `signal`
// (an AbortSignal) stops it.
export async function stream(path, { method = "GET", body, signal, onEvent }) {
  const init = { method, signal, headers: headers({ Accept: "text/event-stream" }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await check(await fetch(path, init));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { name: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (event.data.length) onEvent(event.name, JSON.parse(event.data.join("\n")), event.id);
        event = { name: "message", data: [], id: event.id };
      } else if (line.startsWith(":")) {
        continue; // keep-alive comment
      } else {
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "event") event.name = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  }
}
