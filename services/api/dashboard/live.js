// Following a job's events: the Server-Sent Events stream where the server has it (read with
// fetch, since EventSource cannot send the Authorization header), polling where it does not.

import { ApiError, authHeaders, getJson } from "./api.js";

const POLL_MS = 2000;
const RECONNECT_MS = 1000;
const PAGE = 1000;

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

// Event ids are taken when a row is inserted but become visible when its transaction commits,
// so id 10 may appear after id 11: ids are remembered, not only the greatest, and everything
// below an id seen LATE_MS ago is taken as settled (no transaction stays open that long).
const LATE_MS = 10000;

class SeenIds {
  constructor(after) {
    this.floor = after; // every id up to here is delivered or will never come
    this.seen = new Map(); // id above the floor -> when it arrived
  }

  get greatest() {
    return Math.max(this.floor, ...this.seen.keys());
  }

  add(id) {
    if (id <= this.floor || this.seen.has(id)) return false;
    this.seen.set(id, Date.now());
    return true;
  }

  settle() {
    const cutoff = Date.now() - LATE_MS;
    for (const [id, at] of this.seen) if (at < cutoff && id > this.floor) this.floor = id;
    for (const id of this.seen.keys()) if (id <= this.floor) this.seen.delete(id);
  }
}

// opts: { after, signal, onEvent(event), onMode("stream" | "polling"), isFinished(), onError(e) }
// Resolves when the job's events are all delivered and the job has finished, or on abort.
// Events are delivered once each, late ones too, so not always in id order.
export async function follow(jobId, opts) {
  const ids = new SeenIds(opts.after || 0);
  const deliver = (event) => {
    if (typeof event.id === "number" && ids.add(event.id)) opts.onEvent(event);
  };
  const base = `v1/jobs/${encodeURIComponent(jobId)}/events`;
  while (!opts.signal.aborted) {
    let response;
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      // The server looks for late events itself; a resumed stream starts after the greatest.
      if (ids.greatest) headers["Last-Event-ID"] = String(ids.greatest);
      response = await fetch(`${base}?stream=true`, { headers, signal: opts.signal, cache: "no-store" });
    } catch (error) {
      if (opts.signal.aborted) return;
      opts.onError?.(error);
      await sleep(POLL_MS, opts.signal);
      continue;
    }
    const type = response.headers.get("content-type") || "";
    if (response.ok && type.startsWith("text/event-stream")) {
      opts.onMode?.("stream");
      const ended = await readStream(response.body, deliver, opts.signal).catch(() => false);
      if (ended || opts.signal.aborted) return;
      if (opts.isFinished()) {
        // The job finished (its status says so) but the connection dropped, maybe before its
        // last events: one catch-up read delivers them, rather than a new stream.
        await poll(base, ids, deliver, opts);
        return;
      }
      await sleep(RECONNECT_MS, opts.signal); // dropped: resume after the last id seen
      continue;
    }
    if (response.status === 401 || response.status === 404) {
      opts.onError?.(new ApiError(response.status, (await response.json().catch(() => ({}))).error || {}));
      return;
    }
    response.body?.cancel();
    opts.onMode?.("polling");
    await poll(base, ids, deliver, opts);
    return;
  }
}

async function poll(base, ids, deliver, opts) {
  let caughtUp = false;
  while (!opts.signal.aborted) {
    const finishedBefore = opts.isFinished();
    let page = [];
    ids.settle();
    // Caught up, each poll asks again from the settled floor, so a late event is seen too.
    const after = caughtUp ? ids.floor : ids.greatest;
    try {
      page = await getJson(`${base}?after=${after}&limit=${PAGE}`, { signal: opts.signal });
      page.forEach(deliver);
    } catch (error) {
      if (opts.signal.aborted) return;
      opts.onError?.(error);
      if (error instanceof ApiError && (error.status === 401 || error.status === 404)) return;
      await sleep(POLL_MS, opts.signal); // the server or the network: ask again
      continue;
    }
    caughtUp = page.length < PAGE;
    // Finished before this poll asked: every event of the job was in it.
    if (finishedBefore && caughtUp) return;
    if (caughtUp) await sleep(POLL_MS, opts.signal);
  }
}

// Parses the stream (https://html.spec.whatwg.org/multipage/server-sent-events.html); returns
// true when the server says it ended (an `end` event), false when the connection dropped.
async function readStream(body, deliver, signal) {
  const reader = body.getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  const decoder = new TextDecoder();
  let buffer = "";
  let message = { event: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += decoder.decode(value, { stream: true });
    for (;;) {
      const at = buffer.search(/[\r\n]/);
      if (at < 0) break;
      // A CR at the end of a chunk may be half of a CRLF: wait for the next chunk.
      if (buffer[at] === "\r" && at === buffer.length - 1) break;
      const line = buffer.slice(0, at);
      buffer = buffer.slice(buffer[at] === "\r" && buffer[at + 1] === "\n" ? at + 2 : at + 1);
      if (line === "") {
        if (message.event === "end") return true;
        if (message.data.length) {
          try {
            deliver(JSON.parse(message.data.join("\n")));
          } catch {
            // not an event of the job (a comment-like payload): nothing to show
          }
        }
        message = { event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // keepalive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let data = colon < 0 ? "" : line.slice(colon + 1);
      if (data.startsWith(" ")) data = data.slice(1);
      if (field === "event") message.event = data;
      else if (field === "data") message.data.push(data);
    }
  }
}
