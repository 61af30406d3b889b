// The JSON editor: says at once whether the text parses, and formats it on request. The server
// checks everything again (and its errors are shown in place); this is only a head start.
(function () {
  "use strict";

  function attach(textarea) {
    var status = document.createElement("div");
    status.className = "json-status";
    status.setAttribute("aria-live", "polite");
    var format = document.createElement("button");
    format.type = "button";
    format.className = "btn btn-small";
    format.textContent = "Format JSON";
    var bar = document.createElement("div");
    bar.style.cssText = "display:flex;justify-content:space-between;align-items:center;gap:8px";
    bar.appendChild(status);
    bar.appendChild(format);
    textarea.insertAdjacentElement("afterend", bar);

    // Values of agents.* keys (and an agent's own config) are JSON objects: say so at once,
    // as the server would.
    function needsObject() {
      if (textarea.dataset.jsonObject === "always") return true;
      var keyInput = document.getElementById(textarea.dataset.jsonObjectForKey || "");
      return !!keyInput && /^agents\./.test(keyInput.value.trim());
    }

    function check() {
      var text = textarea.value.trim();
      if (!text) {
        status.textContent = "";
        status.className = "json-status";
        return null;
      }
      try {
        var value = JSON.parse(text);
        if (needsObject() && (value === null || typeof value !== "object" || Array.isArray(value))) {
          var kind = Array.isArray(value) ? "an array" : value === null ? "null" : "a " + typeof value;
          status.textContent = "Valid JSON, but this key needs an object ({…}), not " + kind + ".";
          status.className = "json-status is-invalid";
          return value;
        }
        status.textContent = "Valid JSON";
        status.className = "json-status is-valid";
        return value;
      } catch (error) {
        status.textContent = "Not valid JSON yet: " + error.message;
        status.className = "json-status is-invalid";
        return undefined;
      }
    }

    textarea.addEventListener("input", check);
    var keyInput = document.getElementById(textarea.dataset.jsonObjectForKey || "");
    if (keyInput) keyInput.addEventListener("input", check);
    textarea.addEventListener("keydown", function (event) {
      if (event.key !== "Tab" || event.shiftKey) return;
      event.preventDefault();
      var start = textarea.selectionStart;
      textarea.setRangeText("  ", start, textarea.selectionEnd, "end");
    });
    format.addEventListener("click", function () {
      var value = check();
      if (value !== undefined && value !== null) textarea.value = JSON.stringify(value, null, 2);
    });
    // The server's error is already shown under a field that failed: don't repeat it.
    if (!textarea.closest(".has-error")) check();
  }

  function ready() {
    document.querySelectorAll("textarea[data-json-editor]").forEach(attach);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
