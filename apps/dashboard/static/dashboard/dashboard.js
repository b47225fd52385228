// attnrec ops dashboard: polls /api/summary once a second and renders it; the lookup box
// reads /api/user/<id>. Every string from the stream is escaped (user and item ids are input).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const fmt = (x, d) => (x == null || !isFinite(x)) ? "–" : (Math.abs(x) >= 1000 ? Math.round(x).toLocaleString("en-US") : Number(x).toFixed(d == null ? 1 : d));
  const ms = (x) => (x == null ? "–" : fmt(x, x < 10 ? 1 : 0) + " ms");
  const time = (t) => { if (t == null) return "–"; const d = new Date(typeof t === "number" ? (t > 1e12 ? t : t * 1000) : t); return isNaN(d) ? esc(t) : d.toISOString().slice(11, 19); };
  const short = (v) => v == null ? "" : (Math.abs(v) >= 1e6 ? (v / 1e6).toFixed(1) + "M" : Math.abs(v) >= 1e3 ? (v / 1e3).toFixed(1) + "k" : String(+v.toFixed(2)));
  const VERB = {view: "viewed", click: "clicked", like: "liked", cart: "added to cart", purchase: "bought", gift: "gifted", share: "shared"};

  function setFigure(id, value, text) {
    const el = $(id);
    el.dataset.value = value == null ? "" : String(value);
    el.textContent = text;
  }

  // ---------------------------------------------------------------- charts (uPlot)
  const charts = {};
  function chart(id, series, opts) {
    const el = $(id);
    const width = Math.max(300, el.clientWidth || 500);
    const o = Object.assign({
      width: width, height: 180,
      scales: {x: {time: true}},
      axes: [{stroke: "#8a96a3", grid: {stroke: "#26313c"}},
             {stroke: "#8a96a3", grid: {stroke: "#26313c"}, size: 56, values: (u, vals) => vals.map(short)}],
      series: [{}].concat(series),
      legend: {live: false},
    }, opts || {});
    const data = [[]].concat(series.map(() => []));
    return new uPlot(o, data, el);
  }
  function initCharts() {
    if (typeof uPlot === "undefined") { document.querySelectorAll(".chart").forEach((e) => e.textContent = "chart library failed to load"); return; }
    charts.throughput = chart("chart-throughput", [
      {label: "events in/s", stroke: "#4fb3ff", width: 2},
      {label: "recs out/s", stroke: "#3ecf8e", width: 2},
    ]);
    charts.latency = chart("chart-latency", [
      {label: "p50 ms", stroke: "#3ecf8e", width: 2},
      {label: "p99 ms", stroke: "#ff6b6b", width: 2},
    ]);
    charts.lag = chart("chart-lag", [{label: "lag", stroke: "#f5b942", width: 2, fill: "rgba(245,185,66,.15)"}]);
    charts.dead = chart("chart-dead", [{label: "dead letters/min", stroke: "#ff6b6b", width: 2, fill: "rgba(255,107,107,.15)"}]);
    const dot = {show: true, size: 5};  // one point a minute: drawn even before there is a line
    charts.online = chart("chart-online", [
      {label: "model", stroke: "#3ecf8e", width: 2, points: dot},
      {label: "shadow", stroke: "#b48eff", width: 2, points: dot},
      {label: "trending", stroke: "#f5b942", width: 2, points: dot},
      {label: "static", stroke: "#8a96a3", width: 1, points: dot},
    ], {scales: {x: {time: true}, y: {range: [0, 1]}}});
  }
  function drawCharts(h) {
    if (!charts.throughput || !h || !h.t) return;
    charts.throughput.setData([h.t, h.events_per_s, h.recs_per_s]);
    charts.latency.setData([h.t, h.p50, h.p99]);
    charts.lag.setData([h.t, h.lag]);
    charts.dead.setData([h.t, h.dead_per_min]);
  }

  // ---------------------------------------------------------------- rendering
  function explanations(rec) {
    const b = rec.because || [];
    return b.map((x) => "because you " + (VERB[x.event_type] || "interacted with") + " " + x.item_id +
      (typeof x.weight === "number" ? " — weight " + x.weight.toFixed(2) : ""));
  }
  function feedItem(r) {
    const why = (r.explanations && r.explanations.length ? r.explanations : explanations(r));
    return '<li class="rec" data-user="' + esc(r.user_id) + '">' +
      '<span class="who">' + esc(r.user_id) + "</span> → <span class=\"items\">" + esc((r.items || []).join(", ")) + "</span>" +
      (r.fallback ? '<span class="tag fb">fallback</span>' : "") +
      '<span class="tag">' + esc(r.model_version) + "</span>" +
      (r.latency_ms != null ? '<span class="tag">' + esc(ms(r.latency_ms)) + "</span>" : "") +
      (why.length ? why.map((w) => '<div class="because">' + esc(w) + "</div>").join("") : '<div class="because muted">no explanation (fallback)</div>') +
      "</li>";
  }
  function rows(tbody, html) { tbody.innerHTML = html || '<tr><td colspan="9" class="muted">none</td></tr>'; }

  function render(d) {
    const f = d.figures;
    setFigure("events-per-s", f.events_per_s, fmt(f.events_per_s));
    setFigure("recs-per-s", f.recs_per_s, fmt(f.recs_per_s));
    setFigure("events-total", f.events_total, fmt(f.events_total, 0));
    setFigure("recs-total", f.recs_total, fmt(f.recs_total, 0));
    setFigure("latency-p50", f.latency_p50_ms, ms(f.latency_p50_ms));
    setFigure("latency-p99", f.latency_p99_ms, ms(f.latency_p99_ms));
    $("latency-n").textContent = f.latency_samples;
    $("window").textContent = d.window_s;
    $("fallback-ratio").textContent = f.fallback_ratio == null ? "–" : (100 * f.fallback_ratio).toFixed(0) + "%";
    setFigure("lag-total", f.lag_total, fmt(f.lag_total, 0));
    setFigure("dead-per-min", f.dead_per_min, fmt(f.dead_per_min));
    setFigure("dead-total", f.dead_total, fmt(f.dead_total, 0));
    setFigure("workers", f.workers, String(f.workers));
    $("topics").textContent = d.topics.clicks + " → " + d.topics.recs + " / " + d.topics.dlq;
    $("group").textContent = (d.group.id || "–") + (d.group.state ? " (" + d.group.state + ")" : "");

    const errs = Object.entries(d.errors || {});
    const st = $("status");
    const stale = d.last_sample == null || (d.now - d.last_sample) > 10;
    st.className = "status " + (errs.length || stale ? "bad" : "ok");
    st.textContent = errs.length ? errs.map((e) => e[0] + ": " + e[1]).join("; ") : (stale ? "waiting for Kafka…" : "live · " + time(d.now));

    // model
    const m = d.model || {};
    const serving = Object.entries(d.serving || {}).sort((a, b) => b[1] - a[1]);
    setFigure("model-current", m.current, m.current || "none promoted");
    $("model-serving").textContent = serving.length ? "in recs (last " + d.window_s + " s): " + serving.map((e) => e[0] + " ×" + e[1]).join(", ") : "no recommendations in the window";
    $("registry-root").textContent = m.root ? m.root : "";
    rows(document.querySelector("#versions-table tbody"), (m.versions || []).map((v) => {
      const mets = Object.entries((m.metrics || {})[v.version] || {}).map((e) => e[0] + " " + e[1].toFixed(4)).join(" · ");
      return "<tr><td>" + esc(v.version) + (v.current ? '<span class="tag cur">CURRENT</span>' : "") + (v.quantized ? '<span class="tag">int8</span>' : "") +
        "</td><td>" + esc(v.created_at) + "</td><td>" + esc(mets || "–") + "</td><td>" +
        esc(v.parity_max_abs_diff != null ? "max|Δ| " + Number(v.parity_max_abs_diff).toExponential(1) + ", top-10 " + v.parity_top10_agreement : "–") + "</td><td></td></tr>";
    }).join(""));
    rows(document.querySelector("#history-table tbody"), (m.history || []).map((h) => {
      const figs = Object.entries(h.figures || {}).filter((e) => typeof e[1] !== "object").map((e) => e[0] + " " + (typeof e[1] === "number" ? Number(e[1]).toFixed(4) : e[1])).join(" · ");
      return "<tr><td>" + esc(String(h.ts).replace("T", " ").slice(0, 19)) + "</td><td>" + esc(h.decision) + "</td><td>" + esc(h.version) + "</td><td>" +
        esc(h.previous || "–") + "</td><td>" + esc(h.reason) + "</td><td>" + esc(figs) + "</td></tr>";
    }).join(""));

    // online quality, trending now
    const q = d.quality || {};
    $("quality-policy").textContent = q.error ? "(" + q.error + ")" : (q.policy ? "policy " + q.policy : "");
    const pct = (x) => x == null ? "–" : Number(x).toFixed(4);
    rows(document.querySelector("#quality-table tbody"), (q.online || []).map((r) =>
      "<tr><td>" + esc(r.source) + "</td><td>" + esc(r.version) + '</td><td class="num">' + r.events + '</td><td class="num">' +
      pct(r["hr@10"]) + '</td><td class="num">' + pct(r["ndcg@10"]) + "</td></tr>").join("") || '<tr><td colspan="5" class="muted">no next events scored yet</td></tr>');
    const sr = q.series || {};
    if (charts.online && sr.t) charts.online.setData([sr.t, sr.model, sr.shadow, sr.trending, sr.static]);
    const pair = (a, b) => pct(a) + " / " + pct(b);
    rows(document.querySelector("#rollout-table tbody"), (q.rollout || []).map((c) => {
      const il = c.interleave;
      const win = il ? (il.candidate_wins + " of " + (il.candidate_wins + il.serving_wins) + " = " + pct(il.win_rate) +
        " [" + pct(il.ci95[0]) + ", " + pct(il.ci95[1]) + '] <span class="tag">' + esc(il.verdict) + "</span>") : "–";
      return "<tr><td>" + esc(c.version) + '</td><td class="num">' + c.events + '</td><td class="num">' +
        pair(c["shadow_ndcg@10"], c["serving_ndcg@10"]) + '</td><td class="num">' + pair(c["shadow_hr@10"], c["serving_hr@10"]) +
        '</td><td class="num">' + pct(c["overlap@10"]) + "</td><td>" + win + "</td></tr>";
    }).join("") || '<tr><td colspan="6" class="muted">no version shadowed</td></tr>');
    $("trending").innerHTML = (q.trending || []).map((t) => "<li>" + esc(t.item_id) + ' <span class="muted">' + t.score + "</span></li>").join("") || '<li class="muted">nothing in the window</li>';

    // lag, dead letters, feed
    rows(document.querySelector("#lag-table tbody"), (d.lag || []).map((r) =>
      "<tr><td>" + r.partition + '</td><td class="num">' + r.end + '</td><td class="num">' + (r.committed == null ? "–" : r.committed) +
      '</td><td class="num">' + r.lag + "</td><td>" + esc(r.owner || "–") + "</td></tr>").join(""));
    rows(document.querySelector("#dead-table tbody"), (d.dead_letters || []).slice(0, 10).map((r) =>
      "<tr><td>" + time(r.ts) + "</td><td>" + esc(r.topic + ":" + r.partition + "@" + r.offset) + '</td><td class="err">' + esc(r.error) + "</td></tr>").join(""));
    $("feed").innerHTML = (d.feed || []).slice(0, 25).map(feedItem).join("") || '<li class="muted">no recommendations yet</li>';
    $("feed-count").textContent = (d.feed || []).length ? "(latest " + Math.min(25, d.feed.length) + ")" : "";
    drawCharts(d.history);
  }

  // ---------------------------------------------------------------- lookup
  let looked = "";  // the user on show; refreshed every few seconds
  async function lookup(user, quiet) {
    const box = $("lookup");
    looked = user || "";
    if (!user) { box.dataset.user = ""; return; }
    if (!quiet) { box.dataset.user = ""; box.innerHTML = '<p class="muted">looking up ' + esc(user) + "…</p>"; }
    try {
      const r = await fetch("/api/user/" + encodeURIComponent(user), {credentials: "same-origin"});
      const d = await r.json();
      if (user !== looked) return;  // another lookup started meanwhile
      if (!r.ok) { box.innerHTML = '<p class="err">' + esc(d.error || r.status) + "</p>"; return; }
      box.dataset.user = d.user_id;
      box.dataset.found = d.found ? "1" : "0";
      if (!d.found) { box.innerHTML = '<p class="muted" id="lookup-user">' + esc(d.user_id) + ": no buffer and no recommendation in Redis</p>"; return; }
      let html = '<p>user <b id="lookup-user">' + esc(d.user_id) + "</b> — " + d.recent.length + " recent events</p>";
      if (d.rec) {
        html += '<p>latest recommendation <span class="tag">' + esc(d.rec.model_version) + "</span>" + (d.rec.fallback ? '<span class="tag fb">fallback</span>' : "") +
          ' at ' + time(d.rec.emitted_ts) + ':</p><ol id="lookup-items">' + (d.rec.items || []).map((it) => "<li>" + esc(it.item_id) + ' <span class="muted">' + fmt(it.score, 2) + "</span></li>").join("") + "</ol>" +
          (d.explanations || []).map((w) => '<div class="because">' + esc(w) + "</div>").join("") +
          '<p class="muted"><a id="lookup-schema" href="/schemas/recs.v1.json" target="_blank" rel="noopener">recommendation schema</a></p>';
      } else {
        html += '<p class="muted">no recommendation stored</p>';
      }
      html += '<h3>recent buffer (newest first)</h3><table id="lookup-recent"><thead><tr><th>time</th><th>type</th><th>item</th></tr></thead><tbody>' +
        d.recent.slice(0, 20).map((e) => "<tr><td>" + time(e.ts) + "</td><td>" + esc(e.event_type) + "</td><td>" + esc(e.item_id) + "</td></tr>").join("") + "</tbody></table>";
      box.innerHTML = html;
    } catch (e) {
      box.innerHTML = '<p class="err">lookup failed: ' + esc(e) + "</p>";
    }
  }
  $("lookup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const u = $("lookup-input").value.trim();
    const url = new URL(window.location.href);
    if (u) url.searchParams.set("user", u); else url.searchParams.delete("user");
    history.replaceState(null, "", url.toString());
    lookup(u);
  });
  $("feed").addEventListener("click", (ev) => {
    const li = ev.target.closest("li.rec");
    if (li) { $("lookup-input").value = li.dataset.user; lookup(li.dataset.user); }
  });

  // ---------------------------------------------------------------- loop
  let busy = false, ticks = 0;
  async function tick() {
    if (busy) return;
    busy = true;
    if (looked && ++ticks % 5 === 0) lookup(looked, true);
    try {
      const r = await fetch("/api/summary", {credentials: "same-origin", cache: "no-store"});
      if (r.ok) render(await r.json());
      else { $("status").className = "status bad"; $("status").textContent = "HTTP " + r.status; }
    } catch (e) {
      $("status").className = "status bad"; $("status").textContent = "dashboard unreachable";
    } finally { busy = false; }
  }
  initCharts();
  const u0 = new URLSearchParams(window.location.search).get("user");
  if (u0) { $("lookup-input").value = u0; lookup(u0); }
  tick();
  setInterval(tick, 1000);
})();
