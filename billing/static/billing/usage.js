// The Usage page's chart: the report the server rendered (json_script), drawn with Chart.js.
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("usage-data");
    var canvas = document.getElementById("usage-chart");
    if (!source || !canvas || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var palette = ["#4f46e5", "#0891b2", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#db2777"];
    var datasets;
    if (data.groups.length) {
      datasets = data.groups.map(function (name, index) {
        return {
          label: name || "(none)",
          data: data.grouped.map(function (groups) { return groups[name] || 0; }),
          backgroundColor: palette[index % palette.length],
          stack: "usage"
        };
      });
    } else {
      datasets = [{ label: data.unit, data: data.values, backgroundColor: palette[0] }];
    }
    new Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
        plugins: { legend: { display: data.groups.length > 0 } }
      }
    });
    canvas.setAttribute("data-drawn", "true");
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
