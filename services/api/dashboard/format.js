// How figures read on the page.

export function money(m) {
  if (!m) return "—";
  const amount = Number(m.amount);
  const digits = Math.abs(amount) >= 1 ? 2 : 4;
  return `${amount.toFixed(digits)} ${m.currency}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

export const shortId = (id) => id.slice(0, 8);

export function number(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 0.01 || value === 0 ? value.toFixed(4) : value.toExponential(2);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
