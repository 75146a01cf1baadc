// The dashboard's entry: sign-in, then a view per location hash (#/jobs, #/jobs/<id>).

import { ApiError, apiKey, clearApiKey, getJson, setApiKey } from "./api.js";
import { h, replace } from "./dom.js";
import { showJob } from "./job-view.js";
import { showJobs } from "./jobs-view.js";

const view = document.getElementById("view");
const notice = document.getElementById("notice");
const signOut = document.getElementById("sign-out");
let current = null; // the shown view's AbortController: leaving a view stops its requests

function notify(message, kind = "info") {
  notice.textContent = message;
  notice.className = kind;
  notice.hidden = !message;
}

function onError(error) {
  if (error instanceof ApiError && error.status === 401) {
    clearApiKey();
    route("The API refused the key; sign in again.");
    return;
  }
  const where = error.param ? ` (${error.param})` : "";
  notify(`${error.message}${where}`, "error");
}

function showSignIn(message) {
  const input = h("input", {
    id: "api-key", name: "key", type: "password", autocomplete: "off", required: true,
    placeholder: "rt_…", "aria-label": "API key",
  });
  const error = h("p", { class: "error", id: "sign-in-error", text: message || "" });
  const submit = async (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    try {
      await getJson("v1/jobs?limit=1"); // the key works before anything else is shown
      route();
    } catch (err) {
      clearApiKey();
      error.textContent = err.status === 401 ? "The API refused this key." : err.message;
    }
  };
  replace(view, h("form", { id: "sign-in", class: "sign-in", onsubmit: submit },
    h("h1", { text: "Sign in" }),
    h("p", { class: "muted", text: "An API key of your tenant (relaytune api-key create). It is kept in this tab only." }),
    h("label", {}, "API key ", input),
    h("button", { type: "submit", text: "Sign in" }),
    error,
  ));
  input.focus();
}

function route(signInMessage) {
  current?.abort();
  current = new AbortController();
  notify("");
  signOut.hidden = !apiKey();
  if (!apiKey()) {
    showSignIn(signInMessage);
    return;
  }
  const match = location.hash.match(/^#\/jobs\/([^/]+)$/);
  const context = { signal: current.signal, notify, onError };
  if (match) showJob(view, decodeURIComponent(match[1]), context);
  else showJobs(view, context);
}

signOut.addEventListener("click", () => {
  clearApiKey();
  location.hash = "#/jobs";
  route();
});
window.addEventListener("hashchange", () => route());
route();
