// picollm report, index.html: the runs table and the curve overlay.
//
// The rows come from the JSON embedded in the page and are drawn one page at a time: at 10,000 runs a
// table with every row in the HTML took seconds to parse and lay out, one JSON string and 100 rows open in
// a fraction of that (bench/report_scale.py). Filtering and sorting run over the whole array. The view
// (filters, sort, page, ticked runs) is kept in the URL's #fragment, so the back button from a run page,
// a reload or a copied link shows the same view.
(function () {
  "use strict";
  var holder = document.getElementById("runs-data");
  if (!holder) { return; } // no runs yet
  var data = JSON.parse(holder.textContent);
  var cols = data.columns, rows = data.rows;
  var col = {};
  cols.forEach(function (c, i) { col[c.key] = i; });
  var RUN = col.run;
  var chart = window.picollmChart, esc = chart.esc;
  var collator = new Intl.Collator(undefined, {numeric: true});
  var playground = document.body.dataset.playground || "";
  var $ = function (id) { return document.getElementById(id); };
  var tbody = $("runs").tBodies[0], headers = $("runs").tHead.rows[0].cells;
  var selects = Array.prototype.slice.call(document.querySelectorAll("#filters select[data-key]"));
  var state = {filters: {}, q: "", sort: "", desc: false, page: 0, size: 100, ticked: []};
  var haystacks = null; // each row's text cells, lower-cased, built on the first text search

  function fmt(v, key) {
    if (v === null || v === undefined) { return ""; }
    if (typeof v !== "number") { return String(v); }
    if (key === "learning_rate") { return v.toExponential(1); }
    if (Number.isInteger(v) && Math.abs(v) < 1e15) { return v.toLocaleString("en-US"); }
    return String(Number(v.toPrecision(4)));
  }

  // a run's page is <run>/index.html; a "/" in a run's name makes a subdirectory, as it did on disk
  function runHref(run) { return run.split("/").map(encodeURIComponent).join("/") + "/index.html"; }

  function textOf(r) {
    return cols.map(function (c, i) { return c.num ? "" : (r[i] === null ? "" : String(r[i])); }).join("\u0001").toLowerCase();
  }

  // the indices of the rows that pass the filters, in the chosen order
  function view() {
    var q = state.q.trim().toLowerCase(), keys = Object.keys(state.filters).filter(function (k) { return state.filters[k]; });
    if (q && !haystacks) { haystacks = rows.map(textOf); }
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], ok = true;
      for (var k = 0; k < keys.length && ok; k++) { ok = String(r[col[keys[k]]]) === state.filters[keys[k]]; }
      if (ok && q) { ok = haystacks[i].indexOf(q) >= 0; }
      if (ok) { out.push(i); }
    }
    if (state.sort in col) {
      var j = col[state.sort], numeric = cols[j].num, sign = state.desc ? -1 : 1;
      out.sort(function (a, b) {
        var x = rows[a][j], y = rows[b][j], xe = x === null, ye = y === null;
        if (xe || ye) { return xe - ye || a - b; } // empty cells last, whichever the direction
        var c = numeric ? x - y : collator.compare(String(x), String(y));
        return sign * c || a - b;
      });
    }
    return out;
  }

  function rowHtml(i, ticked) {
    var r = rows[i], run = String(r[RUN]);
    var cells = ['<td class="tick"><input type="checkbox" data-run="' + esc(run) + '"' + (ticked[run] ? " checked" : "") +
                 ' aria-label="overlay the curve of ' + esc(run) + '"></td>'];
    cols.forEach(function (c, j) {
      var v = r[j], text = esc(fmt(v, c.key));
      if (j === RUN) {
        text = '<a href="' + esc(runHref(run)) + '">' + text + "</a>";
        if (playground) {
          text += ' <a class="playground" href="' + esc(playground.split("{run}").join(encodeURIComponent(run))) + '">playground</a>';
        }
      }
      cells.push('<td class="' + (c.num && v !== null ? "num" : "text") + '" data-v="' + esc(v === null ? "" : v) + '">' + text + "</td>");
    });
    return "<tr" + (ticked[run] ? ' class="ticked"' : "") + ">" + cells.join("") + "</tr>";
  }

  function render() {
    var shown = view(), pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var ticked = {};
    state.ticked.forEach(function (run) { ticked[run] = true; });
    var first = state.page * state.size, html = [];
    for (var k = first; k < Math.min(shown.length, first + state.size); k++) { html.push(rowHtml(shown[k], ticked)); }
    tbody.innerHTML = html.join("");
    $("count").textContent = shown.length === rows.length ? rows.length.toLocaleString("en-US") + " runs"
      : shown.length.toLocaleString("en-US") + " of " + rows.length.toLocaleString("en-US") + " runs match";
    $("page").textContent = "page " + (state.page + 1) + " of " + pages + " (" + (shown.length ? first + 1 : 0) + "\u2013" +
      Math.min(shown.length, first + state.size) + ")";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    Array.prototype.forEach.call(headers, function (th) {
      if (th.dataset.key) {
        th.setAttribute("aria-sort", th.dataset.key !== state.sort ? "none" : state.desc ? "descending" : "ascending");
      }
    });
    saveState();
  }

  // ---- the view in the #fragment ----
  function saveState() {
    var p = new URLSearchParams();
    Object.keys(state.filters).forEach(function (k) { if (state.filters[k]) { p.set(k, state.filters[k]); } });
    if (state.q) { p.set("q", state.q); }
    if (state.sort) { p.set("sort", (state.desc ? "-" : "") + state.sort); }
    if (state.page) { p.set("page", state.page + 1); }
    if (state.size !== 100) { p.set("n", state.size); }
    state.ticked.forEach(function (run) { p.append("tick", run); });
    var hash = p.toString(), current = location.hash.slice(1);
    // a fragment that is not a view (#study, from a run page's link) is left alone until the view changes
    if (hash !== current && (hash || current.indexOf("=") >= 0)) {
      try { history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search); } catch (e) { /* some file:// setups refuse: the view is then just not kept */ }
    }
  }

  function loadState() {
    var p = new URLSearchParams(location.hash.slice(1));
    selects.forEach(function (s) {
      var v = p.get(s.dataset.key) || "";
      if (Array.prototype.some.call(s.options, function (o) { return o.value === v; })) { s.value = v; state.filters[s.dataset.key] = v; }
    });
    state.q = $("filter-text").value = p.get("q") || "";
    var sort = p.get("sort") || "";
    state.desc = sort.charAt(0) === "-";
    state.sort = state.desc ? sort.slice(1) : sort;
    var n = parseInt(p.get("n"), 10);
    if (Array.prototype.some.call($("page-size").options, function (o) { return +o.value === n; })) { state.size = n; $("page-size").value = String(n); }
    state.page = (parseInt(p.get("page"), 10) || 1) - 1;
    var known = {};
    rows.forEach(function (r) { known[String(r[RUN])] = true; });
    state.ticked = p.getAll("tick").filter(function (run) { return known[run]; });
  }

  // ---- the overlay of ticked runs' validation-loss curves ----
  // curves.js is a script, not JSON read with fetch(): fetch() of a local file is refused on file://. It is
  // loaded on the first tick only, so 10,000 runs' curves cost the page nothing until they are wanted.
  var curvesState = "absent";
  function drawOverlay() {
    var box = $("overlay");
    $("untick").hidden = !state.ticked.length;
    $("compare-help").hidden = state.ticked.length > 0;
    if (!state.ticked.length) { box.innerHTML = ""; return; }
    if (curvesState !== "loaded") {
      if (curvesState === "absent") {
        curvesState = "loading";
        var s = document.createElement("script");
        s.src = "curves.js";
        s.onload = function () { curvesState = "loaded"; drawOverlay(); };
        s.onerror = function () { curvesState = "failed"; box.innerHTML = '<p class="warn">curves.js is missing: re-run the report</p>'; };
        document.body.appendChild(s);
      }
      return;
    }
    var curves = window.PICOLLM_CURVES || {};
    chart.draw(box, state.ticked.map(function (run, i) {
      return {name: run, points: curves[run] || [], color: chart.palette[i % chart.palette.length], href: runHref(run)};
    }), {x: "step", y: "validation loss"});
  }

  // ---- events ----
  selects.forEach(function (s) {
    s.addEventListener("change", function () { state.filters[s.dataset.key] = s.value; state.page = 0; render(); });
  });
  $("filter-text").addEventListener("input", function (e) { state.q = e.target.value; state.page = 0; render(); });
  $("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  $("page-size").addEventListener("change", function (e) { state.size = +e.target.value; state.page = 0; render(); });
  $("prev").addEventListener("click", function () { state.page -= 1; render(); });
  $("next").addEventListener("click", function () { state.page += 1; render(); });
  $("untick").addEventListener("click", function () { state.ticked = []; render(); drawOverlay(); });
  Array.prototype.forEach.call(headers, function (th) {
    if (!th.dataset.key) { return; }
    th.addEventListener("click", function () {
      state.desc = state.sort === th.dataset.key && !state.desc;
      state.sort = th.dataset.key;
      state.page = 0;
      render();
    });
  });
  tbody.addEventListener("change", function (e) {
    var box = e.target;
    if (!box.dataset || box.dataset.run === undefined) { return; }
    var run = box.dataset.run;
    state.ticked = state.ticked.filter(function (r) { return r !== run; });
    if (box.checked) { state.ticked.push(run); }
    box.closest("tr").classList.toggle("ticked", box.checked);
    saveState();
    drawOverlay();
  });

  loadState();
  render();
  performance.mark("runs-table-rendered"); // read by bench/report_scale.py
  drawOverlay();
})();
