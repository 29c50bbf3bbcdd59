// picollm playground: the run list, the form, the two panes and their token streams.
// Every text from the server goes into the page as textContent, never as HTML.
"use strict";

(function () {
  var panes = { a: null, b: null };  // the run row shown in each pane
  var runs = [];
  var streams = [];  // AbortControllers of the streams in flight

  function $(selector, root) { return (root || document).querySelector(selector); }
  function pane(p) { return document.getElementById("pane-" + p); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function fmtParams(n) {
    if (n === null || n === undefined) return "";
    return n >= 1e6 ? (n / 1e6).toFixed(2) + "M" : n >= 1e3 ? (n / 1e3).toFixed(1) + "k" : String(n);
  }
  function fmtLoss(v) { return v === null || v === undefined ? "" : v.toFixed(3); }

  // ------------------------------------------------------------------------------------------------
  // runs
  // ------------------------------------------------------------------------------------------------
  function drawRuns() {
    var query = $("#run-search").value.trim().toLowerCase();
    var body = $("#runs tbody");
    var shown = runs.filter(function (r) {
      return !query || [r.run, r.model, r.corpus, r.status].join(" ").toLowerCase().indexOf(query) >= 0;
    });
    body.replaceChildren.apply(body, shown.map(runRow));
    $("#run-count").textContent = shown.length + " of " + runs.length + " runs";
  }

  function runRow(r) {
    var tr = el("tr");
    tr.dataset.run = r.run;
    var name = el("td", r.run, "text name");
    name.title = [r.corpus, r.status, r.step ? "step " + r.step : "", r.status === "corrupt" ? r.reason : ""]
      .filter(Boolean).join(", ");
    tr.append(name, el("td", r.model, "text"), el("td", fmtParams(r.params)), el("td", fmtLoss(r.val_loss)));
    var cell = el("td", null, "pick");
    ["a", "b"].forEach(function (p) {
      var b = el("button", p.toUpperCase());
      b.type = "button";
      b.dataset.pane = p;
      if (panes[p] && panes[p].run === r.run && !pane(p).hidden) b.classList.add("on");
      b.disabled = !r.checkpoints.length;
      b.title = r.checkpoints.length ? "show in pane " + p.toUpperCase() : "no checkpoint yet";
      b.addEventListener("click", function (ev) { ev.stopPropagation(); assign(p, r); });
      cell.append(b);
    });
    tr.append(cell);
    tr.addEventListener("click", function () { if (r.checkpoints.length) assign("a", r); });
    return tr;
  }

  function assign(p, r) {
    panes[p] = r;
    var box = pane(p);
    box.hidden = false;
    $(".run-name", box).textContent = r.run;
    $(".facts", box).textContent = [r.model, r.corpus, fmtParams(r.params) + " params",
      r.val_loss === null ? "" : "val loss " + fmtLoss(r.val_loss)].filter(Boolean).join(" \u00b7 ");
    var select = $(".checkpoint", box);
    select.replaceChildren.apply(select, r.checkpoints.map(function (c) { return el("option", c + ".pt"); }));
    r.checkpoints.forEach(function (c, i) { select.options[i].value = c; });
    select.disabled = false;
    clearPane(p);
    remember();
    drawRuns();
  }

  function remember() {  // the chosen runs live in the URL (the report links here with ?run=NAME)
    var params = new URLSearchParams();
    if (panes.a) params.set("run", panes.a.run);
    if (panes.b && !pane("b").hidden) params.set("b", panes.b.run);
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }

  function preselect() {
    var params = new URLSearchParams(location.search);
    [["run", "a"], ["b", "b"]].forEach(function (pair) {
      var name = params.get(pair[0]);
      if (!name) return;
      var r = runs.find(function (x) { return x.run === name; });
      if (r && r.checkpoints.length) assign(pair[1], r);
      else $(".error", pane(pair[1])).textContent = "no run " + JSON.stringify(name) + " with a checkpoint here";
    });
  }

  function loadRuns() {
    fetch("/api/runs").then(function (res) {
      return res.json().then(function (data) {
        if (!res.ok) throw new Error(data.error || res.statusText);
        runs = data.runs;
        drawRuns();
        preselect();
      });
    }).catch(function (e) { $("#run-count").textContent = "could not list the runs: " + e.message; });
  }

  // ------------------------------------------------------------------------------------------------
  // generating
  // ------------------------------------------------------------------------------------------------
  function settings() {
    var out = {};
    document.querySelectorAll("#settings input").forEach(function (input) {
      if (input.dataset.kind === "bool") out[input.name] = input.checked;
      else if (input.value.trim() !== "") out[input.name] = input.value.trim();  // as typed: the server checks it
    });
    return out;
  }

  function clearPane(p) {
    var box = pane(p);
    box.dataset.state = "";
    box.annotations = [];
    $(".output", box).replaceChildren();
    $(".meta", box).textContent = "";
    $(".error", box).textContent = "";
  }

  function generate(ev) {
    ev.preventDefault();
    stop();
    $("#form-error").textContent = "";
    var active = ["a", "b"].filter(function (p) { return panes[p] && !pane(p).hidden; });
    if (!active.length) { $("#form-error").textContent = "pick a run from the list first"; return; }
    var body = { prompt: $("#prompt").value, settings: settings() };
    $("#stop").disabled = false;
    Promise.all(active.map(function (p) {
      return stream(p, Object.assign({ checkpoint: $(".checkpoint", pane(p)).value }, body));
    })).then(function () { $("#stop").disabled = true; });
  }

  function stop() {
    streams.forEach(function (c) { c.abort(); });
    streams = [];
    $("#stop").disabled = true;
  }

  // The response is text/event-stream: "event: NAME\ndata: JSON\n\n" per event.
  function stream(p, body) {
    var box = pane(p);
    clearPane(p);
    box.dataset.state = "running";
    var control = new AbortController();
    streams.push(control);
    var url = "/api/runs/" + encodeURIComponent(panes[p].run) + "/generate";
    return fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
                        signal: control.signal })
      .then(function (res) {
        if (!res.ok) {
          return res.json().catch(function () { return { error: res.status + " " + res.statusText }; })
            .then(function (data) { fail(p, data.error); });
        }
        return readEvents(res.body.getReader(), function (name, data) { onEvent(p, name, data); });
      })
      .catch(function (e) {
        if (e.name === "AbortError") { box.dataset.state = "stopped"; $(".meta", box).textContent += " (stopped)"; }
        else fail(p, "the playground did not answer (" + e.message + ")");
      });
  }

  function readEvents(reader, handle) {
    var decoder = new TextDecoder(), buffer = "";
    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) return;
        buffer += decoder.decode(chunk.value, { stream: true });
        var end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          var name = "message", data = "";
          buffer.slice(0, end).split("\n").forEach(function (line) {
            if (line.indexOf("event: ") === 0) name = line.slice(7);
            else if (line.indexOf("data: ") === 0) data += line.slice(6);
          });
          buffer = buffer.slice(end + 2);
          handle(name, JSON.parse(data));
        }
        return pump();
      });
    }
    return pump();
  }

  function fail(p, message) {
    pane(p).dataset.state = "error";
    $(".error", pane(p)).textContent = message;
  }

  function onEvent(p, name, data) {
    var box = pane(p), out = $(".output", box);
    if (name === "start") {
      out.append(el("span", data.prompt_text, "prompt"));
      $(".meta", box).textContent = data.checkpoint + ".pt, step " + data.step + ", " + data.strategy + ", " +
        data.prompt_tokens + " prompt tokens" +
        (data.unknown.length ? "; not in the run's vocabulary: " + data.unknown.map(JSON.stringify).join(", ") : "");
    } else if (name === "token") {
      var span = el("span", data.piece, "tok");
      span.dataset.index = box.annotations.length;
      box.annotations.push(data);
      out.append(span);
    } else if (name === "done") {
      var last = out.lastElementChild;
      if (data.tail === null) {  // the pieces do not add up to the final text: show the text itself
        out.replaceChildren($(".prompt", out), el("span", data.text, "gen-text"));
      } else if (data.tail && last) {
        last.textContent += data.tail;
      }
      var mean = data.mean_logprob === null ? "" : ", mean log-prob " + data.mean_logprob.toFixed(3);
      $(".meta", box).textContent += " \u2192 " + data.tokens + " tokens in " + data.seconds + " s" + mean;
      box.dataset.state = "done";
    } else if (name === "error") {
      fail(p, data.error);
    }
  }

  // ------------------------------------------------------------------------------------------------
  // the token tooltip: log-prob, top-5 alternatives, embedding neighbours
  // ------------------------------------------------------------------------------------------------
  function showTip(span) {
    var box = span.closest(".pane"), a = box.annotations[+span.dataset.index], tip = $("#tip");
    var alts = a.alternatives.map(function (x) { return JSON.stringify(x[0]) + " " + x[1].toFixed(2); });
    tip.replaceChildren(
      el("div", JSON.stringify(a.token) + "  (id " + a.id + ")", "tip-token"),
      el("div", "logprob " + a.logprob.toFixed(3) + "  (p " + Math.exp(a.logprob).toFixed(3) + ")"),
      el("div", "top-5: " + alts.join(", ")),
      el("div", "neighbours: " + a.neighbours.map(function (s) { return JSON.stringify(s); }).join(", ")));
    var r = span.getBoundingClientRect();
    tip.hidden = false;
    tip.style.left = Math.max(4, Math.min(r.left + window.scrollX, window.scrollX + innerWidth - tip.offsetWidth - 8)) + "px";
    tip.style.top = (r.bottom + window.scrollY + 4) + "px";
  }

  document.addEventListener("mouseover", function (ev) {
    var span = ev.target.closest && ev.target.closest(".tok");
    if (span) showTip(span);
    else $("#tip").hidden = true;
  });

  document.addEventListener("DOMContentLoaded", function () {
    $("#run-search").addEventListener("input", drawRuns);
    $("#form").addEventListener("submit", generate);
    $("#stop").addEventListener("click", stop);
    $(".close", pane("b")).addEventListener("click", function () {
      pane("b").hidden = true;
      panes.b = null;
      remember();
      drawRuns();
    });
    loadRuns();
  });
})();
