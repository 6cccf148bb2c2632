/// The page `ward ledger report` writes, in three parts around the run's title and data
/// (`ReportPage.html`). Self-contained: no request leaves it (its Content-Security-Policy
/// allows none). The ledger's text reaches the page only as JSON, read by `script` and put
/// in the DOM with `textContent`, never parsed as HTML.
enum ReportTemplate {
    static let style = #"""
    :root { --fg: #1d2430; --muted: #667085; --line: #d9dee7; --bg: #f6f7f9; --panel: #fff; --accent: #2457c5; }
    * { box-sizing: border-box; }
    body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
    header { padding: 14px 20px 10px; background: var(--panel); border-bottom: 1px solid var(--line); }
    h1 { font-size: 18px; margin: 0 0 6px; font-weight: 600; }
    h1 .run { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
    h2 { font-size: 13px; margin: 0 0 8px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
    h3 { font-size: 12px; margin: 12px 0 4px; color: var(--muted); font-weight: 600; }
    .facts { display: flex; flex-wrap: wrap; gap: 4px 18px; color: var(--muted); }
    .facts b { color: var(--fg); font-weight: 500; }
    .mono, pre, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
    .verify { display: inline-block; padding: 2px 8px; border-radius: 4px; font-weight: 600; }
    .verify.ok { background: #e3f5e8; color: #19713a; }
    .verify.bad { background: #fde4e1; color: #a4261b; }
    .legend { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
    .chip { display: inline-flex; align-items: center; gap: 5px; padding: 1px 7px; border-radius: 10px; background: #eef0f4; border: 1px solid transparent; white-space: nowrap; }
    button.chip { cursor: pointer; font: inherit; color: inherit; }
    button.chip.on { border-color: var(--fg); }
    .dot { width: 9px; height: 9px; border-radius: 2px; display: inline-block; flex: none; }
    main { padding: 12px 20px 30px; }
    section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin-bottom: 12px; }
    .toolbar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 6px; }
    .toolbar button, .filters input, .filters select { font: inherit; padding: 2px 8px; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
    .toolbar button { cursor: pointer; }
    .hint { color: var(--muted); font-size: 12px; text-transform: none; letter-spacing: 0; font-weight: 400; }
    #timeline { position: relative; }
    #timeline canvas { display: block; width: 100%; cursor: crosshair; }
    #tip { position: absolute; pointer-events: none; background: rgba(20, 24, 32, .92); color: #fff; padding: 4px 7px; border-radius: 4px; font-size: 12px; white-space: pre; display: none; z-index: 2; max-width: 520px; overflow: hidden; }
    .cols { display: grid; grid-template-columns: minmax(0, 11fr) minmax(0, 9fr); gap: 12px; align-items: start; }
    .filters { display: flex; gap: 6px; margin-bottom: 6px; }
    .filters input { flex: 1; }
    #list { height: 430px; overflow-y: auto; position: relative; border: 1px solid var(--line); border-radius: 4px; }
    #rows { position: absolute; left: 0; right: 0; top: 0; }
    .row, .rowhead { display: grid; grid-template-columns: 46px minmax(0, 2.2fr) minmax(0, 1.3fr) 118px 30px 94px 70px; gap: 6px; align-items: center; padding: 0 8px; height: 24px; white-space: nowrap; }
    .row > span, .rowhead > span { overflow: hidden; text-overflow: ellipsis; }
    .rowhead { color: var(--muted); font-size: 12px; border-bottom: 1px solid var(--line); height: 22px; }
    .row { cursor: pointer; border-bottom: 1px solid #f0f2f5; }
    .row:hover { background: #f3f6fc; }
    .row.sel { background: #e4ecfb; }
    .num { text-align: right; color: var(--muted); }
    #details { position: sticky; top: 10px; max-height: calc(100vh - 20px); overflow: auto; }
    #details .kv { display: grid; grid-template-columns: 110px minmax(0, 1fr); gap: 2px 10px; }
    #details .kv > :nth-child(odd) { color: var(--muted); }
    #details .kv > * { overflow-wrap: anywhere; }
    pre { margin: 0; padding: 6px 8px; background: #f4f5f8; border: 1px solid #e6e8ee; border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 240px; overflow: auto; }
    .cut { color: #9a5b00; font-size: 12px; margin-top: 2px; }
    ul.effects { margin: 0; padding-left: 0; list-style: none; }
    ul.effects li { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; padding: 1px 0; overflow-wrap: anywhere; }
    ul.effects .at { color: var(--muted); display: inline-block; min-width: 140px; margin-right: 1em; }
    table { border-collapse: collapse; width: 100%; }
    td, th { text-align: left; padding: 3px 8px 3px 0; vertical-align: top; border-bottom: 1px solid #f0f2f5; overflow-wrap: anywhere; }
    th { color: var(--muted); font-weight: 500; font-size: 12px; }
    #details th, #details td:nth-child(-n+3), a.call { white-space: nowrap; }
    a.call { color: var(--accent); cursor: pointer; text-decoration: none; }
    a.call:hover { text-decoration: underline; }
    .empty { color: var(--muted); font-style: italic; }
    """#

    static let body = #"""
    <header>
    <h1>ward run <span class="run" id="run-id"></span></h1>
    <div class="facts" id="facts"></div>
    <div class="facts" style="margin-top:6px"><span id="verify"></span><span>head <b class="mono" id="head"></b></span></div>
    <div class="legend" id="legend"></div>
    </header>
    <main>
    <noscript><p>This report draws its timeline with a script; allow scripts for this file to see it.</p></noscript>
    <section>
    <h2>Timeline</h2>
    <div class="toolbar" id="zoom"><button type="button" id="zoom-all">whole run</button></div>
    <div id="timeline"><canvas id="canvas" height="120"></canvas><div id="tip"></div></div>
    <div class="hint">Wheel to zoom, drag to pan, click a bar to see the call. Above the bars: attempts, then checkpoints (grey), calls put in doubt (yellow), verdicts (blue), approvals (green) and denials (grey).</div>
    </section>
    <div class="cols">
    <section>
    <h2>Calls <span class="hint" id="call-count"></span></h2>
    <div class="filters"><input id="filter" type="search" placeholder="filter by call ID or tool"><select id="status-filter"><option value="">any status</option></select></div>
    <div class="rowhead"><span class="num">#</span><span>call</span><span>tool</span><span>status</span><span>att.</span><span>started</span><span class="num">time</span></div>
    <div id="list"><div id="spacer"></div><div id="rows"></div></div>
    </section>
    <section id="details"><h2>Call</h2><p class="empty">Click a call in the timeline or the list to see its arguments, output and effects.</p></section>
    </div>
    <section><h2>Attempts and run events</h2><div id="run-events"></div></section>
    <section><h2>Calls in doubt and how they were settled</h2><div id="in-doubt"></div></section>
    <section><h2>Approvals</h2><div id="approvals"></div></section>
    </main>
    """#

    static let script = #"""
    "use strict";
    (function () {
    const data = JSON.parse(document.getElementById("ward-data").textContent);
    const calls = data.calls, marks = data.marks;
    const COLORS = { succeeded: "#2f9e58", failed: "#d9463b", "timed-out": "#e8822a", killed: "#8e4fc2", denied: "#6b7785",
      "in-doubt": "#e6b416", resolved: "#3a78d6", "awaiting-approval": "#c58fd6", approved: "#1aa3a3", running: "#58b4e8" };
    const STATUSES = Object.keys(COLORS);
    const color = (s) => COLORS[s] || "#9aa3af";
    const $ = (id) => document.getElementById(id);
    function el(tag, cls, text) {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined && text !== null) e.textContent = String(text);
      return e;
    }
    function add(parent, ...children) { for (const c of children) parent.appendChild(c); return parent; }
    const t0 = Date.parse(data.t0);
    function clock(ms, withDate) {
      if (ms === null || ms === undefined || isNaN(t0)) return "—";
      const iso = new Date(t0 + ms).toISOString();
      return withDate ? iso.replace("T", " ").replace("Z", " UTC") : iso.slice(11, 23);
    }
    function duration(ms) {
      if (ms === null || ms === undefined) return "—";
      if (ms < 1000) return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + " ms";
      if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
      if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
      return (ms / 3600000).toFixed(1) + " h";
    }
    function chip(status, text) {
      const c = el("span", "chip");
      const d = el("span", "dot");
      d.style.background = color(status);
      return add(c, d, el("span", null, text === undefined ? status : text));
    }
    function callLink(i) {
      const a = el("a", "call", calls[i] ? calls[i].id : "?");
      a.addEventListener("click", () => select(i, true));
      return a;
    }

    // The header: the run, whether verify passed, its head hash, and the calls by status.
    const run = data.run || {};
    $("run-id").textContent = run.run;
    document.title = "ward report: " + run.run;
    const facts = $("facts");
    function fact(label, value) { if (value !== null && value !== undefined && value !== "") add(facts, add(el("span", null, label + " "), el("b", null, value))); }
    fact("created", clock(0, true));
    fact("last event", clock(data.end, true));
    fact("attempts", run.attempts);
    fact("calls", calls.length);
    fact("checkpoints", run.checkpoints);
    fact("journal entries", data.journal);
    fact("agent", run.agent ? run.agent.join(" ") : "");
    fact("workspace", run.workspace);
    if (run.origin) fact("fork of", run.origin + " at checkpoint " + run.forkedAt);
    fact("state", run.unfinished ? "unfinished" : "finished (exit " + (run.exitStatus === null ? 0 : run.exitStatus) + ")");
    const v = data.verify;
    const verify = $("verify");
    verify.className = "verify " + (v.ok ? "ok" : "bad");
    verify.textContent = v.ok ? "ledger verify: passed (" + v.events + " events" + (v.note ? "; " + v.note : "") + ")" : "ledger verify: FAILED — " + v.problem;
    $("head").textContent = v.head;
    const counts = {};
    for (const c of calls) counts[c.status] = (counts[c.status] || 0) + 1;
    const statusFilter = $("status-filter");
    for (const s of STATUSES.concat(Object.keys(counts).filter((s) => !(s in COLORS)))) {
      if (!counts[s]) continue;
      const b = add(el("button", "chip"), chip(s, s + " " + counts[s]));
      b.type = "button";
      b.dataset.status = s;
      b.addEventListener("click", () => { statusFilter.value = statusFilter.value === s ? "" : s; applyFilter(); });
      $("legend").appendChild(b);
      const o = el("option", null, s);
      o.value = s;
      statusFilter.appendChild(o);
    }

    // The timeline: one bar per execution (a gated call's wait too), packed into lanes so
    // that calls running at once do not overlap, drawn on one canvas however many there are.
    const end = Math.max(data.end || 0, 1);
    const segs = [];
    calls.forEach((c, i) => { for (const s of c.spans) segs.push({ s: s[0] || 0, e: s[1] === null ? end : Math.max(s[1], s[0] || 0), st: s[2], call: i }); });
    segs.sort((a, b) => a.s - b.s || a.e - b.e);
    const laneEnds = [];
    for (const g of segs) {
      let lane = laneEnds.findIndex((e) => e <= g.s);
      if (lane < 0) { lane = laneEnds.length; laneEnds.push(0); }
      laneEnds[lane] = g.e;
      g.lane = lane;
    }
    const lanes = Math.max(laneEnds.length, 1);
    const laneH = lanes <= 2 ? 28 : lanes <= 8 ? 18 : Math.max(3, Math.floor(150 / lanes));
    const AXIS = 20, ATT = 20, MARK = 16, TOP = AXIS + ATT + MARK + 4;
    const attempts = marks.filter((m) => m[1] === "run.attempt");
    const canvas = $("canvas"), ctx = canvas.getContext("2d"), tip = $("tip");
    let view = [-end * 0.01, end * 1.01], selected = -1, width = 0;
    const X = (ms) => ((ms - view[0]) / (view[1] - view[0])) * width;
    const T = (x) => view[0] + (x / width) * (view[1] - view[0]);
    function niceStep(span) {
      const raw = span / 8, p = Math.pow(10, Math.floor(Math.log10(raw)));
      for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
      return 10 * p;
    }
    function draw() {
      const dpr = window.devicePixelRatio || 1;
      width = canvas.clientWidth;
      const height = TOP + lanes * laneH + 6;
      canvas.style.height = height + "px";
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, width, height);
      ctx.font = "11px system-ui, sans-serif";
      // Attempts: alternating bands, each labelled where it starts.
      attempts.forEach((m, k) => {
        const x0 = Math.max(X(m[0]), 0), x1 = Math.min(k + 1 < attempts.length ? X(attempts[k + 1][0]) : width, width);
        if (x1 <= x0) return;
        ctx.fillStyle = k % 2 ? "#f2f4f8" : "#e9eef8";
        ctx.fillRect(x0, AXIS, x1 - x0, height - AXIS);
        ctx.fillStyle = "#2a3342";
        const resumed = marks.some((r) => r[1] === "run.resumed" && r[4] === m[4] - 1);
        ctx.fillText("attempt " + (k + 1) + (resumed ? " (resumed)" : "") + (k ? " ↻" : ""), x0 + 4, AXIS + 14);
      });
      // The time axis, in UTC.
      const step = niceStep(view[1] - view[0]);
      ctx.fillStyle = "#667085";
      ctx.strokeStyle = "#e3e6ec";
      const base = isNaN(t0) ? 0 : t0;
      for (let t = Math.ceil((base + view[0]) / step) * step - base; t <= view[1]; t += step) {
        const x = X(t);
        ctx.beginPath(); ctx.moveTo(x + 0.5, AXIS - 4); ctx.lineTo(x + 0.5, height); ctx.stroke();
        const label = isNaN(t0) ? Math.round(t) + " ms" : new Date(t0 + t).toISOString().slice(11, step < 1000 ? 23 : 19);
        ctx.fillText(label, x + 3, 12);
      }
      // Run events above the bars.
      const my = AXIS + ATT;
      for (const m of marks) {
        const x = X(m[0]);
        if (x < -5 || x > width + 5) continue;
        switch (m[1]) {
          case "checkpoint.save": ctx.fillStyle = "#a3abb8"; ctx.fillRect(x, my + 4, 1, 8); break;
          case "checkpoint.damaged": ctx.fillStyle = "#d9463b"; ctx.fillRect(x - 1, my + 2, 3, 12); break;
          case "call.in-doubt": triangle(x, my, COLORS["in-doubt"]); break;
          case "call.resolve": diamond(x, my, COLORS.resolved); break;
          case "call.gate": diamond(x, my, COLORS["awaiting-approval"]); break;
          case "call.approve": diamond(x, my, COLORS.succeeded); break;
          case "call.deny": diamond(x, my, COLORS.denied); break;
          case "run.finish":
            ctx.fillStyle = "#1d2430"; ctx.fillRect(x, AXIS, 2, height - AXIS);
            const label = m[2].replace("the agent exited with status", "exit");
            ctx.fillText(label, x + 4 + ctx.measureText(label).width > width ? x - 4 - ctx.measureText(label).width : x + 4, my + 12); break;
          default: break;
        }
      }
      // The bars, at least 2 px wide so that a call of a millisecond still shows; the
      // succeeded ones first, so that where thousands share a pixel the others show.
      for (const pass of [true, false]) for (const g of segs) {
        if ((g.st === "succeeded") !== pass) continue;
        const x0 = X(g.s), x1 = Math.max(X(g.e), x0 + 2);
        if (x1 < 0 || x0 > width) continue;
        ctx.fillStyle = color(g.st);
        ctx.fillRect(x0, TOP + g.lane * laneH + 1, x1 - x0, laneH - 2);
      }
      if (selected >= 0) {
        ctx.strokeStyle = "#111"; ctx.lineWidth = 2;
        for (const g of segs) if (g.call === selected) {
          const x0 = X(g.s), x1 = Math.max(X(g.e), x0 + 2);
          ctx.strokeRect(x0 - 1, TOP + g.lane * laneH, x1 - x0 + 2, laneH);
        }
        ctx.lineWidth = 1;
      }
    }
    function triangle(x, y, fill) { ctx.fillStyle = fill; ctx.beginPath(); ctx.moveTo(x, y + 2); ctx.lineTo(x + 5, y + 13); ctx.lineTo(x - 5, y + 13); ctx.fill(); }
    function diamond(x, y, fill) { ctx.fillStyle = fill; ctx.beginPath(); ctx.moveTo(x, y + 2); ctx.lineTo(x + 5, y + 8); ctx.lineTo(x, y + 14); ctx.lineTo(x - 5, y + 8); ctx.fill(); }
    function hit(x, y) {
      if (y >= TOP) {
        const lane = Math.floor((y - TOP) / laneH);
        let best = null, dist = 4;
        for (const g of segs) {
          if (g.lane !== lane) continue;
          const x0 = X(g.s), x1 = Math.max(X(g.e), x0 + 2);
          const d = x < x0 ? x0 - x : x > x1 ? x - x1 : 0;
          if (d < dist || (d === 0 && best && d === dist)) { best = { call: g.call, seg: g }; dist = d; }
        }
        return best;
      }
      if (y >= AXIS + ATT) {
        let best = null, dist = 6;
        for (const m of marks) {
          const d = Math.abs(X(m[0]) - x);
          if (d < dist && m[1] !== "run.attempt") { best = { mark: m, call: m[3] === null ? -1 : m[3] }; dist = d; }
        }
        return best;
      }
      return null;
    }
    let drag = null;
    canvas.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, view: view.slice(), moved: false }; });
    window.addEventListener("mouseup", (e) => {
      if (drag && !drag.moved && e.target === canvas) {
        const h = hit(e.offsetX, e.offsetY);
        if (h && h.call >= 0) select(h.call, true);
      }
      drag = null;
    });
    canvas.addEventListener("mousemove", (e) => {
      if (drag) {
        const dx = e.offsetX - drag.x;
        if (Math.abs(dx) > 3) drag.moved = true;
        if (drag.moved) {
          const shift = (dx / width) * (drag.view[1] - drag.view[0]);
          view = [drag.view[0] - shift, drag.view[1] - shift];
          draw();
        }
        tip.style.display = "none";
        return;
      }
      const h = hit(e.offsetX, e.offsetY);
      if (!h) { tip.style.display = "none"; return; }
      let text;
      if (h.mark) text = clock(h.mark[0]) + "  " + h.mark[2] + (h.call >= 0 ? "\n" + calls[h.call].id : "");
      else {
        const c = calls[h.call];
        text = c.id + "\n" + c.tool + " — " + h.seg.st + "\n" + clock(h.seg.s) + ", " + duration(h.seg.e - h.seg.s);
      }
      tip.textContent = text;
      tip.style.display = "block";
      tip.style.left = Math.min(e.offsetX + 12, width - 260) + "px";
      tip.style.top = e.offsetY + 14 + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const at = T(e.offsetX), f = Math.pow(1.0015, e.deltaY);
      const span = Math.max((view[1] - view[0]) * f, 5);
      view = [at - ((at - view[0]) / (view[1] - view[0])) * span, 0];
      view[1] = view[0] + span;
      draw();
    }, { passive: false });
    function zoomTo(a, b) { const pad = Math.max((b - a) * 0.02, 2); view = [a - pad, b + pad]; draw(); }
    $("zoom-all").addEventListener("click", () => zoomTo(0, end));
    attempts.forEach((m, k) => {
      const b = el("button", null, "attempt " + (k + 1));
      b.type = "button";
      b.addEventListener("click", () => zoomTo(m[0], k + 1 < attempts.length ? attempts[k + 1][0] : end));
      $("zoom").appendChild(b);
    });
    window.addEventListener("resize", () => { draw(); renderRows(); });

    // The list: every call in chain order, only the rows in view in the DOM.
    const ROW = 24, list = $("list"), rows = $("rows");
    let shown = calls.map((_, i) => i);
    function renderRows() {
      const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
      const last = Math.min(shown.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + 5);
      rows.style.top = first * ROW + "px";
      rows.textContent = "";
      for (let k = first; k < last; k++) {
        const i = shown[k], c = calls[i];
        const r = el("div", "row" + (i === selected ? " sel" : ""));
        r.dataset.call = String(i);
        const start = c.spans.length ? c.spans[0][0] : null;
        add(r, el("span", "num", i + 1), el("span", "cid mono", c.id), el("span", null, c.tool), chip(c.status), el("span", "num", c.attempt),
          el("span", "mono", clock(start)), el("span", "num", duration(c.durationMs)));
        r.title = c.id;
        r.addEventListener("click", () => select(i, false));
        rows.appendChild(r);
      }
    }
    function applyFilter() {
      const q = $("filter").value.toLowerCase(), s = statusFilter.value;
      shown = [];
      calls.forEach((c, i) => { if ((!s || c.status === s) && (!q || c.id.toLowerCase().includes(q) || c.tool.toLowerCase().includes(q))) shown.push(i); });
      $("spacer").style.height = shown.length * ROW + "px";
      $("call-count").textContent = shown.length === calls.length ? calls.length + " calls" : shown.length + " of " + calls.length + " calls";
      for (const b of $("legend").children) b.classList.toggle("on", b.dataset.status === s);
      list.scrollTop = 0;
      renderRows();
    }
    list.addEventListener("scroll", () => requestAnimationFrame(renderRows));
    $("filter").addEventListener("input", applyFilter);
    statusFilter.addEventListener("change", applyFilter);

    // One call's details.
    function kv(box, label, value) { if (value !== null && value !== undefined && value !== "") add(box, el("span", null, label), el("span", null, value)); }
    function block(parent, title, text, total, notUTF8) {
      parent.appendChild(el("h3", null, title));
      if (text === undefined || text === "") { parent.appendChild(el("div", "empty", "(empty)")); return; }
      parent.appendChild(el("pre", null, text));
      if (total) parent.appendChild(el("div", "cut", "cut: the first " + data.limit.toLocaleString("en") + " bytes of " + total.toLocaleString("en") + " are shown"));
      if (notUTF8) parent.appendChild(el("div", "cut", "not UTF-8: bytes that are not text are shown as �"));
    }
    function select(i, scroll) {
      selected = i;
      const c = calls[i], box = $("details");
      box.textContent = "";
      const title = add(el("h2"), document.createTextNode("Call "));
      box.appendChild(title);
      add(box, add(el("div", "mono"), el("b", "call-id", c.id)), chip(c.status));
      const facts = el("div", "kv");
      box.appendChild(facts);
      kv(facts, "tool", c.tool + " (" + c.effect + ")");
      kv(facts, "attempt", c.attempt + (c.executions > 1 ? ", " + c.executions + " executions" : ""));
      const last = c.spans.length ? c.spans[c.spans.length - 1] : null;
      kv(facts, "started", last ? clock(last[0], true) : "");
      if (last && last[1] !== null) kv(facts, "ended", clock(last[1], true));
      kv(facts, "duration", c.durationMs === undefined ? "" : duration(c.durationMs));
      kv(facts, "exit code", c.exitCode);
      kv(facts, "signal", c.signal);
      if (c.truncated) kv(facts, "truncated", "the tool's output went past its policy's limit and was cut when recorded");
      if (c.verdict) kv(facts, "settled", c.verdict + (c.note ? ": " + c.note : ""));
      let args = c.arguments;
      if (!c.argumentsBytes) { try { args = JSON.stringify(JSON.parse(c.arguments), null, 2); } catch (e) { args = c.arguments; } }
      block(box, "Arguments", args, c.argumentsBytes);
      block(box, "stdout", c.stdout, c.stdoutBytes, c.stdoutNotUTF8);
      block(box, "stderr", c.stderr, c.stderrBytes, c.stderrNotUTF8);
      const effects = el("div", "effects");
      box.appendChild(add(el("h3"), document.createTextNode("Effects")));
      box.appendChild(effects);
      const traces = c.effects || [];
      if (!traces.length) effects.appendChild(el("div", "empty", "no effect trace recorded for this call"));
      for (const t of traces) {
        effects.appendChild(el("div", "hint", (traces.length > 1 ? "execution " + t.execution + ": " : "") + (t.mode || "?") + " effects (what the tool attempted, whether or not it succeeded)"));
        const ul = el("ul", "effects");
        for (const f of t.effects) add(ul, add(el("li"), el("span", "at", (f[0] === null ? "" : "+" + f[0] + " ms") + (f[1] === null ? "" : " pid " + f[1])), document.createTextNode(f[2])));
        if (t.notShown > 0) ul.appendChild(el("li", "cut", "… " + t.notShown + " more recorded: ward ledger show " + data.run.run + " " + c.id));
        if (t.dropped > 0) ul.appendChild(el("li", "cut", "… " + t.dropped + " more not recorded (trace capped)"));
        else if (t.truncated) ul.appendChild(el("li", "cut", "… more may have followed: the trace reached its limit"));
        if (!t.effects.length && !(t.dropped > 0)) ul.appendChild(el("li", "empty", "none"));
        effects.appendChild(ul);
      }
      box.appendChild(el("h3", null, "Events"));
      const table = el("table");
      add(table, add(el("tr"), el("th", null, "seq"), el("th", null, "time"), el("th", null, "event"), el("th", null, "")));
      const events = c.events.concat(marks.filter((m) => m[3] === i && m[1] === "checkpoint.save").map((m) => [m[4], m[0], m[1], m[2]]))
        .sort((a, b) => a[0] - b[0]);
      for (const ev of events) add(table, add(el("tr"), el("td", "num", ev[0]), el("td", "mono", clock(ev[1])), el("td", null, ev[2]), el("td", null, ev[3])));
      box.appendChild(table);
      if (scroll) {
        const k = shown.indexOf(i);
        if (k >= 0 && (k * ROW < list.scrollTop || (k + 1) * ROW > list.scrollTop + list.clientHeight)) list.scrollTop = Math.max(0, k * ROW - list.clientHeight / 2);
      }
      renderRows();
      draw();
    }

    // Run events, calls in doubt and approvals: few, so listed whole.
    function table(box, headers, rowsOf) {
      if (!rowsOf.length) { box.appendChild(el("div", "empty", "none")); return; }
      const t = el("table");
      add(t, add(el("tr"), ...headers.map((h) => el("th", null, h))));
      for (const cells of rowsOf) add(t, add(el("tr"), ...cells.map((c) => (c instanceof Node ? add(el("td"), c) : el("td", null, c)))));
      box.appendChild(t);
    }
    const runKinds = ["run.attempt", "run.resumed", "run.finish", "run.fork", "run.place", "run.moved", "run.policies", "checkpoint.damaged"];
    table($("run-events"), ["time", "event", ""], marks.filter((m) => runKinds.includes(m[1])).map((m) => [clock(m[0], true), m[1], m[2]]));
    const settlement = (i, kinds) => marks.filter((m) => m[3] === i && kinds.includes(m[1]));
    const doubted = [...new Set(marks.filter((m) => m[1] === "call.in-doubt").map((m) => m[3]))];
    table($("in-doubt"), ["call", "put in doubt", "why", "settled"], doubted.map((i) => {
      const found = settlement(i, ["call.in-doubt"]), res = settlement(i, ["call.resolve"]);
      return [callLink(i), clock(found[0][0], true), found[0][2].replace(/^in doubt: /, ""),
        res.length ? res.map((m) => clock(m[0]) + " " + m[2]).join("; ") : "not yet: still in doubt"];
    }));
    const gated = [...new Set(marks.filter((m) => m[1] === "call.gate").map((m) => m[3]))];
    table($("approvals"), ["call", "gated", "verdict"], gated.map((i) => {
      const verdict = settlement(i, ["call.approve", "call.deny"]);
      return [callLink(i), clock(settlement(i, ["call.gate"])[0][0], true), verdict.length ? clock(verdict[0][0]) + " " + verdict[0][2] : "awaiting a verdict"];
    }));

    applyFilter();
    draw();
    })();
    """#
}
