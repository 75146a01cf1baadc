// The API client: every call carries the key kept in this tab's sessionStorage.

const KEY = "relaytune.apiKey";

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.param = error.param || null;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY);
export const setApiKey = (key) => sessionStorage.setItem(KEY, key);
export const clearApiKey = () => sessionStorage.removeItem(KEY);

export function authHeaders() {
  return { Authorization: `Bearer ${apiKey() || ""}` };
}

// Paths are relative ("v1/jobs"), so the dashboard works behind a proxy that serves it under
// a prefix as well as at the root.
export async function send(path, { method = "GET", body, headers = {}, signal } = {}) {
  const init = { method, signal, cache: "no-store", headers: { ...authHeaders(), ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJson(path, options) {
  return (await send(path, options)).json();
}

async function errorOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    error = { message: `${response.status} ${response.statusText}` };
  }
  return new ApiError(response.status, error);
}
