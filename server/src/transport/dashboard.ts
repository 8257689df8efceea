/**
 * The dashboard: one static page served at GET /. It reads and acts through
 * AdminService over the Connect protocol (JSON over HTTP POST, on this same
 * port), so it needs no API of its own and shows exactly what buf curl would.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jobwire</title>
<style>
  :root { color-scheme: light dark; --muted: #8a8f98; --bad: #d64545; --ok: #2f9e44; --line: #8884; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 24px; }
  h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
  .muted { color: var(--muted); }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: right; padding: 6px 10px; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
  th:first-child, td:first-child, td.left, th.left { text-align: left; }
  td.dead { color: var(--bad); font-weight: 600; }
  .err { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; max-width: 520px; text-align: left; }
  button { font: inherit; padding: 3px 10px; cursor: pointer; }
  #status { float: right; }
</style>
</head>
<body>
<span id="status" class="muted">loading…</span>
<h1>jobwire</h1>
<div class="muted">Queues, backlog and dead letters. Refreshes every 2 s.</div>

<h2>Queues</h2>
<table>
  <thead><tr><th>queue</th><th>scheduled</th><th>available</th><th>running</th><th>retryable</th><th>completed</th><th>dead</th><th>cancelled</th><th>oldest waiting</th><th></th></tr></thead>
  <tbody id="queues"><tr><td colspan="10" class="muted">no jobs yet</td></tr></tbody>
</table>

<h2>Dead letters <span class="muted">(newest 50)</span></h2>
<table>
  <thead><tr><th class="left">job</th><th class="left">queue</th><th class="left">type</th><th>attempts</th><th class="left">last error</th><th class="left">died</th><th></th></tr></thead>
  <tbody id="dead"><tr><td colspan="7" class="muted">none</td></tr></tbody>
</table>

<script>
const rpc = async (method, body) => {
  const res = await fetch("/jobwire.v1.AdminService/" + method, {
    method: "POST",
    headers: { "content-type": "application/json", "connect-protocol-version": "1" },
    body: JSON.stringify(body),
  });
  const data = await res.json();
  if (!res.ok) throw new Error(data.message || res.statusText);
  return data;
};
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const n = (v) => Number(v ?? 0).toLocaleString();
const age = (d) => { const s = parseFloat(d ?? "0"); return s <= 0 ? "" : s < 60 ? s.toFixed(1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h"; };

async function replay(req, what) {
  if (!confirm("Replay " + what + "?")) return;
  try { const r = await rpc("Replay", req); alert("Replayed " + (r.replayed ?? 0) + " job(s)."); refresh(); }
  catch (e) { alert("Replay failed: " + e.message); }
}
window.replayQueue = (q) => replay({ filter: { queue: q } }, "every dead job on " + q);
window.replayJob = (id) => replay({ jobIds: [id] }, "job " + id);

async function refresh() {
  try {
    const [stats, dead] = await Promise.all([
      rpc("GetQueueStats", {}),
      rpc("ListJobs", { states: ["JOB_STATE_DEAD"], pageSize: 50 }),
    ]);
    const qs = stats.queues ?? [];
    document.getElementById("queues").innerHTML = qs.length ? qs.map((q) =>
      "<tr><td>" + esc(q.queue) + "</td><td>" + n(q.scheduled) + "</td><td>" + n(q.available) + "</td><td>" + n(q.running) +
      "</td><td>" + n(q.retryable) + "</td><td>" + n(q.completed) + "</td><td class='" + (Number(q.dead) ? "dead" : "") + "'>" + n(q.dead) +
      "</td><td>" + n(q.cancelled) + "</td><td>" + age(q.oldestAvailableAge) + "</td><td>" +
      (Number(q.dead) ? "<button onclick='replayQueue(" + JSON.stringify(esc(q.queue)) + ")'>replay dead</button>" : "") + "</td></tr>").join("")
      : "<tr><td colspan='10' class='muted'>no jobs yet</td></tr>";
    const jobs = dead.jobs ?? [];
    document.getElementById("dead").innerHTML = jobs.length ? jobs.map((j) => {
      const last = (j.errors ?? []).at(-1) ?? {};
      return "<tr><td class='left'>" + esc(j.id) + "</td><td class='left'>" + esc(j.queue) + "</td><td class='left'>" + esc(j.type) +
        "</td><td>" + n(j.attempt) + "/" + n(j.maxAttempts) + "</td><td class='err'>" + esc(last.message) + "</td><td class='left'>" +
        esc((j.finishedAt ?? "").replace("T", " ").slice(0, 19)) + "</td><td><button onclick='replayJob(" + JSON.stringify(esc(j.id)) + ")'>replay</button></td></tr>";
    }).join("") : "<tr><td colspan='7' class='muted'>none</td></tr>";
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("status").textContent = "error: " + e.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;
