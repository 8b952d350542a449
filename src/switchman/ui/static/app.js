// switchman dashboard: theme, charts (uPlot), CSRF header for htmx, confirmations. No inline scripts (CSP).
(function () {
  "use strict";
  var root = document.documentElement;
  var stored = null;
  try { stored = localStorage.getItem("switchman-theme"); } catch (e) { /* storage may be off */ }
  if (stored === "light" || stored === "dark") root.dataset.theme = stored;

  window.switchmanCharts = {};

  function css(name) { return getComputedStyle(root).getPropertyValue(name).trim(); }

  // Dollars as switchman/_money.py writes them: cents from $1, three significant digits below, e-notation
  // below a millionth, $0 for nothing (or float noise), -$inf, — for no amount (null, NaN); each format chosen after
  // rounding (tests/ui/test_chart_money.py holds the two to the same text).
  function money(v) {
    if (v == null || Number.isNaN(v)) return "—";
    var a = Math.abs(v), sign = v < 0 ? "-$" : "$", text;
    if (a < 1e-12) return "$0";  // float noise (a saving of -1.1e-16) is nothing
    if (a === Infinity) return sign + "inf";
    if (a < 1e-6) {
      var parts = a.toExponential(1).split("e"), exp = parseInt(parts[1], 10);
      if (exp < -6) return sign + parts[0].replace(/\.0$/, "") + "e-" + (exp > -10 ? "0" : "") + -exp;
      a = 1e-6;  // 9.96e-7 rounds to a millionth, so it reads as 1e-6 does: $0.000001
    }
    if (a >= 1) {
      text = a.toFixed(2).replace(/\B(?=(\d{3})+(?!\d))/g, ",");  // (toLocaleString rounds the shortest decimal, not the value)
    } else {
      var fixed = a.toFixed(2 - Math.floor(Math.log10(a))).split(".");
      var fraction = fixed[1].replace(/0+$/, "");
      text = fixed[0] + "." + (fraction.length < 2 ? (fraction + "00").slice(0, 2) : fraction);
    }
    return sign + text;
  }

  function chartOptions(kind, width, data) {
    var common = {
      width: width, height: kind === "saving" ? 140 : 240,
      scales: { x: { time: true } },
      axes: [
        { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } },
        { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") }, size: 64,
          values: kind === "saving" ? function (u, vs) { return vs.map(function (v) { return v + "%"; }); }
                                   : function (u, vs) { return vs.map(money); } }
      ],
      cursor: { drag: { x: false, y: false } }
    };
    if (kind === "saving") {
      common.series = [{}, { label: "saving", stroke: css("--saving"), fill: css("--saving") + "22", width: 2,
        value: function (u, v) { return v == null ? "—" : v.toFixed(1) + "%"; } }];
    } else {
      common.series = [{},
        { label: "spend", stroke: css("--spend"), width: 2, value: function (u, v) { return money(v); } },
        { label: "baseline", stroke: css("--baseline"), width: 2, dash: [6, 4], value: function (u, v) { return money(v); } }];
    }
    return common;
  }

  function drawCharts() {
    var nodes = document.querySelectorAll("[data-chart]");
    Array.prototype.forEach.call(nodes, function (el) {
      var source = document.getElementById(el.dataset.source);
      if (!source || typeof uPlot === "undefined") return;
      var payload = JSON.parse(source.textContent);
      var kind = el.dataset.chart;
      var data = kind === "saving" ? [payload.x, payload.saving_pct] : [payload.x, payload.spend, payload.baseline];
      var old = window.switchmanCharts[el.id];
      if (old) old.destroy();
      el.textContent = "";
      var width = Math.max(el.clientWidth, 280);
      window.switchmanCharts[el.id] = new uPlot(chartOptions(kind, width, data), data, el);
      el.dataset.points = String(payload.x.length);
    });
  }

  function setupTheme() {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      var dark = root.dataset.theme ? root.dataset.theme === "dark"
                                    : window.matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      try { localStorage.setItem("switchman-theme", root.dataset.theme); } catch (e) { /* ignore */ }
      drawCharts();
    });
  }

  function setupConfirm() {
    document.addEventListener("submit", function (event) {
      var message = event.target.dataset && event.target.dataset.confirm;
      if (message && !window.confirm(message)) event.preventDefault();
    }, true);
  }

  function setupHtmx() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    document.body.addEventListener("htmx:configRequest", function (event) {
      if (meta) event.detail.headers["X-CSRF-Token"] = meta.content;
    });
    document.body.addEventListener("htmx:afterSettle", drawCharts);
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupTheme();
    setupConfirm();
    setupHtmx();
    drawCharts();
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(drawCharts, 150);
    });
  });
})();
