// picollm report: shared by index.html and the run pages. Line charts, and sorting of the small tables.
//
// The charts are hand-written SVG, not a charting library: the report must open from disk with no network
// (no CDN) and stay a few plain files, and a handful of loss curves need ~100 lines, not a vendored library.
(function () {
  "use strict";

  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  var MARKERS_UP_TO = 60; // points per curve below which each point gets a hoverable dot

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }

  // ~n round-numbered ticks covering [lo, hi]
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    var raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    var step = mag * (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10);
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) { out.push(+v.toPrecision(12)); }
    return out;
  }

  function tickText(v) {
    var a = Math.abs(v);
    if (a >= 1e6) { return +(v / 1e6).toPrecision(3) + "M"; }
    if (a >= 1e4) { return +(v / 1e3).toPrecision(3) + "k"; }
    return String(+v.toPrecision(4));
  }

  // the y range of the curves: all of them, or (zoomed) only after the first tenth of the x range, where the
  // untrained model's loss would squash the differences that matter into a few pixels
  function yRange(series, x0, x1, whole) {
    var ys = [], from = whole ? -Infinity : x0 + (x1 - x0) / 10;
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[0] >= from) { ys.push(p[1]); } }); });
    if (!ys.length) { return yRange(series, x0, x1, true); }
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys), pad = (y1 - y0) * 0.05 || 0.5;
    return [y0 - pad, y1 + pad];
  }

  var charts = 0; // numbers each chart's clip path: ids are page-wide

  // Draw series = [{name, points: [[x, y], ...], color?, href?}] into el as an SVG line chart with a legend
  // and a "whole curves" switch (zoomed by default, lines clipped to the plot). Returns the curves drawn;
  // a series without points is listed in the legend as "no data".
  function drawChart(el, series, opts) {
    opts = opts || {};
    var W = Math.max(360, Math.min(el.clientWidth || 760, 980)), H = opts.height || 320;
    var m = {l: 60, r: 16, t: 12, b: 40}, pw = W - m.l - m.r, ph = H - m.t - m.b;
    var xs = [];
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); }); });
    if (!xs.length) {
      el.innerHTML = '<p class="meta">no curve data for ' + esc(series.map(function (s) { return s.name; }).join(", ")) + "</p>";
      return 0;
    }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    if (x1 === x0) { x1 = x0 + 1; }
    var yr = yRange(series, x0, x1, !!opts.whole), y0 = yr[0], y1 = yr[1];
    var sx = function (x) { return m.l + (x - x0) / (x1 - x0) * pw; };
    var sy = function (y) { return m.t + (1 - (y - y0) / (y1 - y0)) * ph; };
    var clip = "picollm-clip-" + (charts += 1);
    var out = ['<label class="meta"><input type="checkbox" class="whole"' + (opts.whole ? " checked" : "") +
               "> whole curves (the y axis also covers the first tenth of the " + esc(opts.x || "x") + "s)</label>",
               '<svg width="' + W + '" height="' + H + '" role="img" aria-label="' + esc(opts.y || "") + " by " + esc(opts.x || "") + '">' +
               '<clipPath id="' + clip + '"><rect x="' + m.l + '" y="' + m.t + '" width="' + pw + '" height="' + ph + '"/></clipPath>'];
    ticks(y0, y1, 6).forEach(function (t) {
      if (t < y0 || t > y1) { return; }
      out.push('<line class="grid" x1="' + m.l + '" x2="' + (W - m.r) + '" y1="' + sy(t) + '" y2="' + sy(t) + '"/>' +
               '<text x="' + (m.l - 6) + '" y="' + (sy(t) + 4) + '" text-anchor="end">' + tickText(t) + "</text>");
    });
    ticks(x0, x1, 7).forEach(function (t) {
      if (t < x0 || t > x1) { return; }
      out.push('<line class="grid" y1="' + m.t + '" y2="' + (H - m.b) + '" x1="' + sx(t) + '" x2="' + sx(t) + '"/>' +
               '<text x="' + sx(t) + '" y="' + (H - m.b + 15) + '" text-anchor="middle">' + tickText(t) + "</text>");
    });
    out.push('<line class="axis" x1="' + m.l + '" x2="' + m.l + '" y1="' + m.t + '" y2="' + (H - m.b) + '"/>' +
             '<line class="axis" x1="' + m.l + '" x2="' + (W - m.r) + '" y1="' + (H - m.b) + '" y2="' + (H - m.b) + '"/>' +
             '<text x="' + (m.l + pw / 2) + '" y="' + (H - 6) + '" text-anchor="middle">' + esc(opts.x || "") + "</text>" +
             '<text transform="translate(14,' + (m.t + ph / 2) + ') rotate(-90)" text-anchor="middle">' + esc(opts.y || "") + "</text>" +
             '<g clip-path="url(#' + clip + ')">');
    var legend = [], drawn = 0;
    series.forEach(function (s, i) {
      var color = s.color || PALETTE[i % PALETTE.length];
      var name = esc(s.name);
      var label = s.href ? '<a href="' + esc(s.href) + '">' + name + "</a>" : name;
      if (!s.points.length) {
        legend.push('<li class="nodata">' + label + " (no data)</li>");
        return;
      }
      drawn += 1;
      var d = s.points.map(function (p, j) { return (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1); }).join("");
      out.push('<path class="curve" stroke="' + color + '" d="' + d + '"><title>' + name + "</title></path>");
      if (s.points.length <= MARKERS_UP_TO) {
        s.points.forEach(function (p) {
          out.push('<circle cx="' + sx(p[0]).toFixed(1) + '" cy="' + sy(p[1]).toFixed(1) + '" r="2.5" fill="' + color + '">' +
                   "<title>" + name + "\n" + esc(opts.x || "x") + " " + p[0] + ": " + p[1] + "</title></circle>");
        });
      }
      var ys = s.points.map(function (p) { return p[1]; });
      legend.push('<li><span class="swatch" style="background:' + color + '"></span>' + label +
                  ' <span class="meta">(last ' + ys[ys.length - 1] + ", min " + Math.min.apply(null, ys) + ")</span></li>");
    });
    out.push("</g></svg>");
    el.innerHTML = out.join("") + '<ul class="legend">' + legend.join("") + "</ul>";
    el.querySelector("input.whole").addEventListener("change", function (e) {
      drawChart(el, series, Object.assign({}, opts, {whole: e.target.checked}));
    });
    return drawn;
  }
  window.picollmChart = {draw: drawChart, palette: PALETTE, esc: esc};

  // every chart a page declares: <div class="chart" data-series='[...]' data-x="step" data-y="loss">
  document.querySelectorAll("div.chart[data-series]").forEach(function (el) {
    drawChart(el, JSON.parse(el.dataset.series), {x: el.dataset.x, y: el.dataset.y});
  });

  // The small server-rendered tables (table.sortable): click a header to sort by it, again to reverse.
  // Numbers compare as numbers (data-v holds the raw value), text numeric-aware ("run2" < "run10"); empty
  // cells always sort last.
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var numeric = th.dataset.type === "num";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
          var xe = x === "", ye = y === "";
          if (xe || ye) { return xe - ye; }
          var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
