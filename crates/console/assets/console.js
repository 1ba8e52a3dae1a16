// packlight console: the only script of its own. (1) A weight slider keeps
// its major's weights at 100 by moving the others; the number fields are
// what the form sends (typing in one moves only its own slider, so a sum
// other than 100 can be typed and is shown as the model's diagnostic).
// Validation, preview and diff are server round trips (htmx).
// (2) The traffic chart: uPlot fed by the server-sent events of
// /c/N/traffic/events, which also replace the numbers table.
(function () {
  "use strict";
  function field(slider) { return document.getElementById(slider.dataset.for); }
  function rebalance(moved) {
    var form = moved.form || document;
    var all = Array.prototype.slice.call(
      form.querySelectorAll('input.slider[data-major="' + moved.dataset.major + '"]'));
    var others = all.filter(function (s) { return s !== moved; });
    var sum = all.reduce(function (a, s) { return a + Number(s.value); }, 0);
    var delta = 100 - sum;
    for (var i = others.length - 1; i >= 0 && delta !== 0; i--) {
      var v = Number(others[i].value);
      var nv = Math.max(0, Math.min(100, v + delta));
      delta -= nv - v;
      others[i].value = nv;
    }
    all.forEach(function (s) { var f = field(s); if (f) { f.value = s.value; } });
  }
  document.addEventListener("input", function (e) {
    var t = e.target;
    if (t.matches && t.matches("input.slider")) {
      rebalance(t);
    } else if (t.matches && t.matches("input.weight")) {
      var s = document.querySelector('input.slider[data-for="' + t.id + '"]');
      if (s) { s.value = t.value; }
    }
  }, true);

  function startChart() {
    var el = document.getElementById("chart");
    if (!el || !el.dataset.events || typeof uPlot === "undefined") { return; }
    var times = [], series = {}, keys = [], plot = null, max = 150;
    function build(ks) {
      if (plot) { plot.destroy(); }
      var palette = ["#457b9d", "#e76f51", "#2a9d8f", "#e9c46a", "#8338ec", "#6c757d"];
      plot = new uPlot({
        width: Math.max(400, el.clientWidth || 800), height: 300,
        series: [{}].concat(ks.map(function (k, i) {
          return { label: k + " req/s", stroke: palette[i % palette.length], width: 2 };
        })),
        axes: [{}, { label: "req/s" }]
      }, [times].concat(ks.map(function (k) { return series[k]; })), el);
      keys = ks;
    }
    var es = new EventSource(el.dataset.events);
    es.addEventListener("table", function (e) {
      var t = document.getElementById("traffic");
      if (t) { t.outerHTML = e.data; }
    });
    es.addEventListener("data", function (e) {
      var rows = JSON.parse(e.data);
      times.push(Date.now() / 1000);
      rows.forEach(function (r) {
        var k = r.namespace + "/" + r.service + " " + r.version;
        if (!(k in series)) { series[k] = times.slice(0, -1).map(function () { return null; }); }
      });
      Object.keys(series).forEach(function (k) {
        var r = rows.find(function (r) { return r.namespace + "/" + r.service + " " + r.version === k; });
        series[k].push(r ? r.requestsPerSecond : null);
      });
      if (times.length > max) {
        times.shift();
        Object.keys(series).forEach(function (k) { series[k].shift(); });
      }
      var ks = Object.keys(series).sort();
      if (ks.join("|") !== keys.join("|") || !plot) { build(ks); }
      else { plot.setData([times].concat(ks.map(function (k) { return series[k]; }))); }
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startChart);
  } else { startChart(); }
})();
