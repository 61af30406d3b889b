// Live portal updates over the gateway (/ws/events/), authenticated by the page's session.
// Elements with data-live-subjects name what to subscribe to; handlers below update instance
// rows, config rows, the metrics panel and the activity feed. No build step, no dependencies.
(function () {
  "use strict";
  if (window.agentplaneLive) return;
  window.agentplaneLive = true;

  var MAX_FEED = 20;
  var WINDOW_MS = 15 * 60 * 1000;
  var series = {}; // instance id -> [{t, cpu}]
  var latest = {}; // instance id -> last metrics

  function subjects() {
    var wanted = {};
    document.querySelectorAll("[data-live-subjects]").forEach(function (el) {
      el.getAttribute("data-live-subjects").split(/\s+/).forEach(function (s) {
        if (s) wanted[s] = true;
      });
    });
    return Object.keys(wanted);
  }

  function setStatus(text, live) {
    document.querySelectorAll("[data-live-status]").forEach(function (el) {
      el.textContent = text;
      el.className = "badge " + (live ? "badge-success" : "badge-muted");
    });
  }

  // Times on the portal are UTC, as "YYYY-MM-DD HH:MM:SS".
  function utc(value) {
    var date = new Date(value);
    if (isNaN(date.getTime())) return "";
    return date.toISOString().slice(0, 19).replace("T", " ");
  }

  // Regions the server renders (data-live-region="name", data-live-on="subject prefixes"): when
  // a matching event arrives, the page is fetched again and those regions are swapped in, so that
  // rows appear, change and disappear exactly as a reload would show them.
  var refreshTimer = null;
  var refreshes = 0;
  function wantsRefresh(subject) {
    var hit = false;
    document.querySelectorAll("[data-live-region]").forEach(function (region) {
      (region.getAttribute("data-live-on") || "").split(/\s+/).forEach(function (prefix) {
        if (prefix && subject.indexOf(prefix) === 0) hit = true;
      });
    });
    if (!hit) return;
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshRegions, 200);
  }
  function refreshRegions() {
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-region]").forEach(function (region) {
          var name = region.getAttribute("data-live-region");
          var next = fresh.querySelector('[data-live-region="' + name + '"]');
          if (!next || next.innerHTML === region.innerHTML) return;
          var open = region.querySelectorAll("details[open]").length > 0;
          region.innerHTML = next.innerHTML;
          if (open) region.querySelectorAll("details").forEach(function (d) { d.open = true; });
        });
        refreshes += 1;
        document.body.setAttribute("data-live-refreshed", String(refreshes));
      })
      .catch(function () { /* offline for a moment: the next event tries again */ });
  }

  function capitalise(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function onInstance(event) {
    var data = event.data || {};
    var row = document.querySelector('tr[data-instance="' + data.id + '"]');
    if (!row || !data.status) return;
    row.setAttribute("data-status", data.status);
    var badge = row.querySelector(".badge");
    if (badge) {
      badge.className = "badge badge-" + data.status;
      badge.setAttribute("data-status", data.status);
      badge.innerHTML = '<span class="dot"></span>';
      badge.appendChild(document.createTextNode(capitalise(data.status)));
    }
  }

  function onConfig(event) {
    var data = event.data || {};
    var row = document.querySelector('tr[data-key="' + CSS.escape(String(data.key)) + '"]');
    if (!row) return;
    var pre = row.querySelector("pre");
    if (pre) pre.textContent = data.value === null ? "(deleted)" : JSON.stringify(data.value, null, 2);
    var version = row.querySelector("td.num");
    if (version) version.textContent = data.version;
    row.setAttribute("data-live-updated", String(data.version));
  }

  // The chart: CPU % (0-100, left axis) over the last 15 minutes (bottom axis, UTC).
  var PLOT = { left: 34, right: 336, top: 8, bottom: 96 };
  function axes(now) {
    var parts = [];
    [0, 50, 100].forEach(function (value) {
      var y = PLOT.bottom - (value / 100) * (PLOT.bottom - PLOT.top);
      parts.push('<line class="grid-line" x1="' + PLOT.left + '" x2="' + PLOT.right + '" y1="' + y + '" y2="' + y + '"></line>');
      parts.push('<text x="' + (PLOT.left - 4) + '" y="' + (y + 3) + '" text-anchor="end">' + value + '%</text>');
    });
    [15, 10, 5, 0].forEach(function (minutes) {
      var x = PLOT.right - (minutes * 60000 / WINDOW_MS) * (PLOT.right - PLOT.left);
      var label = minutes ? "−" + minutes + " min" : utc(now).slice(11, 16) + " UTC";
      parts.push('<text x="' + x + '" y="' + (PLOT.bottom + 12) + '" text-anchor="' + (minutes === 15 ? "start" : minutes ? "middle" : "end") + '">' + label + "</text>");
    });
    return parts.join("");
  }

  function drawChart(panel) {
    var svg = panel.querySelector("[data-chart]");
    if (!svg) return;
    var now = Date.now();
    // One user unit per pixel, so that the labels keep their size at any width.
    var pixels = Math.max(200, Math.round(svg.getBoundingClientRect().width || 340));
    PLOT.right = pixels - 6;
    svg.setAttribute("viewBox", "0 0 " + pixels + " 116");
    var colours = ["#4f46e5", "#059669", "#d97706", "#dc2626", "#0891b2"];
    var width = PLOT.right - PLOT.left;
    var height = PLOT.bottom - PLOT.top;
    var lines = Object.keys(series).map(function (instance, index) {
      var points = series[instance]
        .filter(function (p) { return now - p.t <= WINDOW_MS; })
        .map(function (p) {
          var x = PLOT.right - ((now - p.t) / WINDOW_MS) * width;
          var y = PLOT.bottom - (Math.min(100, p.cpu) / 100) * height;
          return x.toFixed(1) + "," + y.toFixed(1);
        });
      var colour = colours[index % colours.length];
      var last = points.length ? points[points.length - 1].split(",") : null;
      return '<polyline fill="none" stroke-width="1.5" stroke="' + colour +
        '" points="' + points.join(" ") + '"></polyline>' +
        (last ? '<circle r="2.5" fill="' + colour + '" cx="' + last[0] + '" cy="' + last[1] + '"></circle>' : "");
    });
    svg.innerHTML = axes(now) + lines.join("");
  }

  function drawRows(panel) {
    var body = panel.querySelector("[data-metric-rows]");
    var empty = panel.querySelector("[data-metric-empty]");
    if (!body) return;
    var ids = Object.keys(latest);
    if (empty) empty.hidden = ids.length > 0;
    body.innerHTML = "";
    ids.forEach(function (instance) {
      var m = latest[instance];
      var tr = document.createElement("tr");
      tr.setAttribute("data-metrics-instance", instance);
      [instance.slice(0, 8), m.cpu_percent, m.memory_mb, m.queue_depth, m.response_ms, m.tasks_done,
        utc(m.minute).slice(11, 16)].forEach(function (value, i) {
        var td = document.createElement("td");
        if (i > 0 && i < 6) td.className = "num";
        td.textContent = value;
        if (i === 1) td.setAttribute("data-metric", "cpu_percent");
        if (i === 5) td.setAttribute("data-metric", "tasks_done");
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function addPoint(point) {
    var list = series[point.instance] || (series[point.instance] = []);
    list.push({ t: Date.parse(point.minute) || Date.now(), cpu: point.cpu_percent });
    latest[point.instance] = point;
  }

  function onMetrics(event, agentId) {
    var panel = document.querySelector('[data-live-metrics="' + agentId + '"]');
    if (!panel) return;
    var point = Object.assign({}, event.data);
    point.minute = event.timestamp;
    addPoint(point);
    drawRows(panel);
    drawChart(panel);
    var row = document.querySelector('tr[data-instance="' + point.instance + '"]');
    var heartbeat = row && row.children[4];
    if (heartbeat) heartbeat.textContent = utc(event.timestamp);
  }

  // What an event means, in words (the feed members see; admins read the audit log instead).
  function describe(event) {
    var data = event.data || {};
    var s = event.subject || "";
    var short = data.id ? String(data.id).slice(0, 8) : "";
    var name = data.name ? "“" + data.name + "”" : "";
    var m = /^instance\.(\w+)$/.exec(s);
    if (m) {
      var verbs = { requested: "was requested", running: "is running", stopping: "is stopping",
        stopped: "stopped", failed: "failed" };
      return "Instance " + short + " " + (verbs[m[1]] || m[1]);
    }
    if (s === "agent.created") return "Agent " + name + " was created";
    if (s === "agent.updated") return "Agent " + name + " was changed";
    if (s === "agent.deleted") return "Agent " + name + " was deleted";
    if (s === "config.changed") {
      return data.value === null ? "Config key " + data.key + " was deleted"
        : "Config key " + data.key + " changed (version " + data.version + ")";
    }
    if (s === "audit.alert") return "Alert: " + (data.rule || data.name || data.message || "a compliance rule matched");
    return s;
  }

  function onFeed(event) {
    var feed = document.querySelector("[data-live-feed]");
    if (!feed) return;
    var empty = feed.querySelector("[data-live-feed-empty]");
    if (empty) empty.remove();
    var li = document.createElement("li");
    li.className = "live-feed-item";
    li.setAttribute("data-live-event", event.subject);
    var time = document.createElement("time");
    time.className = "muted small";
    time.setAttribute("datetime", event.timestamp);
    time.textContent = utc(event.timestamp).slice(11) + " UTC";
    var text = document.createElement("span");
    text.textContent = describe(event);
    li.appendChild(time);
    li.appendChild(text);
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > MAX_FEED) feed.removeChild(feed.lastChild);
  }

  function dispatch(event) {
    var s = event.subject || "";
    wantsRefresh(s);
    if (s.indexOf("instance.") === 0) onInstance(event);
    if (s === "config.changed") onConfig(event);
    var m = /^agents\.([0-9a-f-]+)\.metrics$/.exec(s);
    if (m) onMetrics(event, m[1]);
    else onFeed(event);
  }

  function loadInitial() {
    var initial = document.getElementById("live-metrics-initial");
    var panel = document.querySelector("[data-live-metrics]");
    if (!initial || !panel) return;
    JSON.parse(initial.textContent).forEach(addPoint);
    drawRows(panel);
    drawChart(panel);
  }

  var attempt = 0;
  function connect() {
    var wanted = subjects();
    if (!wanted.length) return;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/ws/events/");
    var subscribed = 0;
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.op === "ready") {
        attempt = 0;
        setStatus("Live", true);
        wanted.forEach(function (subject) {
          socket.send(JSON.stringify({ op: "subscribe", subject: subject }));
        });
      } else if (frame.op === "subscribed") {
        subscribed += 1;
        if (subscribed === wanted.length) document.body.setAttribute("data-live-ready", "1");
      } else if (frame.error) {
        if (window.console) console.warn("gateway:", frame.error.code, frame.error.message);
      } else if (frame.subject) {
        dispatch(frame);
      }
    };
    socket.onclose = function () {
      document.body.removeAttribute("data-live-ready");
      setStatus("Reconnecting…", false);
      attempt += 1;
      setTimeout(connect, Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2));
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    loadInitial();
    // A staff support session reads pages only: the gateway does not accept it.
    if (document.body.hasAttribute("data-support-session")) {
      setStatus("Off in a support session", false);
      return;
    }
    connect();
    var panel = document.querySelector("[data-live-metrics]");
    if (panel) setInterval(function () { drawChart(panel); }, 30000);
  });
})();
