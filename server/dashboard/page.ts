/**
 * The cluster dashboard: one self-contained HTML page (no external script, style or font) that polls
 * /apis/v2/dashboard/cluster every second and redraws members, leader and objects in place.
 */

/** How often the page asks for a new view, in ms. */
export const DASHBOARD_POLL_MS = 1000;

/** The page served at / and /dashboard of the admin API. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Easegress cluster</title>
<style>
  :root { --bg:#0f1419; --panel:#171e26; --line:#263241; --text:#dbe4ee; --dim:#8a9bb0; --ok:#3fb950;
          --bad:#f85149; --warn:#d29922; --lead:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg);
         color:var(--text); }
  header { display:flex; flex-wrap:wrap; gap:24px; align-items:baseline; padding:18px 28px;
           border-bottom:1px solid var(--line); background:var(--panel); }
  header h1 { margin:0; font-size:20px; font-weight:600; }
  .kv { color:var(--dim); } .kv b { color:var(--text); font-weight:600; }
  main { padding:20px 28px; display:grid; gap:20px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  section h2 { margin:0; padding:12px 16px; font-size:15px; font-weight:600; border-bottom:1px solid var(--line); }
  table { width:100%; border-collapse:collapse; }
  th, td { text-align:left; padding:8px 16px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
  tr:last-child td { border-bottom:none; }
  td.num { font-variant-numeric:tabular-nums; text-align:right; } th.num { text-align:right; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600;
           border:1px solid var(--line); color:var(--dim); }
  .badge.Leader { color:var(--lead); border-color:var(--lead); }
  .badge.Follower { color:var(--text); }
  .badge.Removed, .badge.Unreachable, .badge.Offline, .badge.down { color:var(--bad); border-color:var(--bad); }
  .dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:7px; background:var(--ok); }
  .dot.down { background:var(--bad); }
  .err { color:var(--bad); } .dim { color:var(--dim); }
  #status.down { color:var(--bad); }
  .empty { padding:14px 16px; color:var(--dim); }
</style>
</head>
<body>
<header>
  <h1 id="cluster">Easegress cluster</h1>
  <span class="kv">leader <b id="leader">…</b></span>
  <span class="kv">term <b id="term">…</b></span>
  <span class="kv">members <b id="count">…</b></span>
  <span class="kv">served by <b id="self">…</b></span>
  <span class="kv" id="status">connecting…</span>
</header>
<main>
  <section>
    <h2>Members</h2>
    <table>
      <thead><tr><th>Health</th><th>Name</th><th>Role</th><th>Raft state</th><th>Member ID</th>
        <th class="num">Heartbeat age</th><th>Admin API</th></tr></thead>
      <tbody id="members"></tbody>
    </table>
  </section>
  <section>
    <h2>Objects</h2>
    <table>
      <thead><tr><th>Kind</th><th>Name</th><th>Member</th><th>Status</th><th class="num">Requests</th>
        <th class="num">Req/s (1m)</th><th class="num">Errors/s (1m)</th><th class="num">Error rate</th></tr></thead>
      <tbody id="objects"></tbody>
    </table>
    <div class="empty" id="no-objects" hidden>No objects.</div>
  </section>
</main>
<script>
"use strict";
const POLL_MS = ${DASHBOARD_POLL_MS};
const $ = (id) => document.getElementById(id);
function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}
function badge(text, cls) {
  const td = document.createElement("td");
  const s = document.createElement("span");
  s.className = "badge " + (cls || text);
  s.textContent = text;
  td.appendChild(s);
  return td;
}
function age(ms) {
  if (ms < 0) return "never";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}
function rate(v) { return v.toFixed(v >= 100 ? 0 : 2); }
function render(v) {
  $("cluster").textContent = v.clusterName || "Easegress cluster";
  $("leader").textContent = v.leader ? (v.leader.name || v.leader.id) : "none";
  $("leader").className = v.leader ? "" : "err";
  $("term").textContent = v.raftTerm;
  const up = v.members.filter((m) => m.healthy).length;
  $("count").textContent = up + " / " + v.members.length + " healthy";
  $("self").textContent = v.self;
  const st = $("status");
  st.textContent = v.errors.length ? "store: " + v.errors[0] : "live · " + new Date(v.time).toLocaleTimeString();
  st.className = "kv" + (v.errors.length ? " down" : "");
  const rows = [];
  for (const m of v.members) {
    const tr = document.createElement("tr");
    tr.dataset.member = m.name;
    tr.dataset.state = m.raftState;
    tr.dataset.healthy = String(m.healthy);
    const h = document.createElement("td");
    const dot = document.createElement("span");
    dot.className = "dot" + (m.healthy ? "" : " down");
    h.appendChild(dot);
    h.appendChild(document.createTextNode(m.healthy ? "up" : "down"));
    tr.append(h, cell(m.name), cell(m.role), m.role === "primary" ? badge(m.raftState) : cell("-", "dim"),
      cell(m.etcdId || "-", "dim"), cell(age(m.heartbeatAgeMs), "num" + (m.healthy ? "" : " err")), cell(m.apiAddr, "dim"));
    rows.push(tr);
  }
  $("members").replaceChildren(...rows);
  const orows = [];
  for (const o of v.objects) {
    const names = Object.keys(o.members).sort();
    const lines = names.length ? names : [""];
    for (const [i, mn] of lines.entries()) {
      const s = o.members[mn];
      const tr = document.createElement("tr");
      tr.dataset.object = o.name;
      const t = s ? s.traffic : { count: 0, errCount: 0, m1: 0, m1Err: 0 };
      const errRate = t.m1 > 0 ? t.m1Err / t.m1 : (t.count > 0 ? t.errCount / t.count : 0);
      tr.append(cell(i === 0 ? o.kind : "", "dim"), cell(i === 0 ? o.name : ""), cell(mn || "-"),
        s ? badge(s.error ? "error" : (s.state || "ok"), s.error ? "down" : "Follower") : cell("-", "dim"),
        cell(String(t.count), "num"), cell(rate(t.m1), "num"), cell(rate(t.m1Err), "num" + (t.m1Err > 0 ? " err" : "")),
        cell((errRate * 100).toFixed(1) + " %", "num" + (errRate > 0 ? " err" : "")));
      orows.push(tr);
    }
  }
  $("objects").replaceChildren(...orows);
  $("no-objects").hidden = v.objects.length > 0;
}
async function poll() {
  try {
    const r = await fetch("/apis/v2/dashboard/cluster", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    $("status").textContent = "this member does not answer: " + e.message;
    $("status").className = "kv down";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
</script>
</body>
</html>
`;
