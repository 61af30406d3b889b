// Small progressive enhancements. Every page works without them.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function slugify(text) {
    return text
      .normalize("NFKD")
      .replace(/[\u0300-\u036f]/g, "")
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "")
      .slice(0, 40)
      .replace(/-+$/g, "");
  }

  function ready() {
    // Signup: suggest the address from the organization's name until the user edits it.
    document.querySelectorAll("input[data-slug-from]").forEach(function (slug) {
      var source = document.getElementById(slug.dataset.slugFrom);
      if (!source) return;
      var edited = slug.value !== "" && slug.value !== slugify(source.value);
      slug.addEventListener("input", function () {
        edited = slug.value !== "";
      });
      source.addEventListener("input", function () {
        if (!edited) slug.value = slugify(source.value);
      });
    });

    // Ask before destructive actions.
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });

    // A select that applies its choice at once (its button is the no-JavaScript fallback).
    document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
      select.addEventListener("change", function () {
        if (select.form.requestSubmit) select.form.requestSubmit();
        else select.form.submit();
      });
    });

    // Close an open menu when clicking elsewhere or pressing Escape.
    document.addEventListener("click", function (event) {
      document.querySelectorAll("details.menu[open]").forEach(function (menu) {
        if (!menu.contains(event.target)) menu.removeAttribute("open");
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key !== "Escape") return;
      document.querySelectorAll("details.menu[open]").forEach(function (menu) {
        menu.removeAttribute("open");
      });
    });

    // Phones: the navigation collapses behind the Menu button.
    document.querySelectorAll("[data-nav-toggle]").forEach(function (button) {
      var nav = document.getElementById(button.getAttribute("aria-controls"));
      if (!nav) return;
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        button.setAttribute("aria-expanded", open ? "true" : "false");
        nav.classList.toggle("is-open", open);
      });
    });

    // Theme: system (the default) -> dark -> light -> system, remembered in this browser.
    var THEMES = ["system", "dark", "light"];
    function currentTheme() {
      return document.documentElement.dataset.theme || "system";
    }
    function showTheme() {
      document.querySelectorAll("[data-theme-label]").forEach(function (label) {
        label.textContent = currentTheme();
      });
    }
    document.querySelectorAll("[data-theme-toggle]").forEach(function (button) {
      button.addEventListener("click", function () {
        var next = THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length];
        try {
          if (next === "system") localStorage.removeItem("agentplane-theme");
          else localStorage.setItem("agentplane-theme", next);
        } catch (error) { /* private mode: the choice lasts for this page only */ }
        if (next === "system") delete document.documentElement.dataset.theme;
        else document.documentElement.dataset.theme = next;
        showTheme();
      });
    });
    showTheme();

    document.querySelectorAll("input[data-select-on-focus]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });

    // A region that scrolls sideways (a wide table, long JSON) is reachable with the keyboard.
    function focusableScrollers() {
      document.querySelectorAll(".table-scroll, pre, .card, .card-body, .table").forEach(function (el) {
        var scrolls = el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1;
        var style = getComputedStyle(el);
        var scrollable = /(auto|scroll)/.test(style.overflowX + style.overflowY);
        if (scrolls && scrollable && !el.hasAttribute("tabindex")) {
          el.setAttribute("tabindex", "0");
          el.setAttribute("data-scroll-focus", "");
        }
      });
    }
    focusableScrollers();
    window.addEventListener("resize", focusableScrollers);

    // Forms: a form that came back with errors moves the focus to its error summary.
    var summary = document.querySelector("[data-error-summary]");
    if (summary) summary.focus();

    // Signup handoff: post the one-time sign-in token to the organization's host.
    var handoff = document.querySelector("form[data-autosubmit]");
    if (handoff) handoff.submit();
  }

  // Copy buttons: <button data-copy="text"> or data-copy-from="#element-id" (its value or text).
  // Delegated, so that rows added live (static/gateway/live.js) get them too.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (error) { ok = false; }
      area.remove();
      if (ok) resolve(); else reject(new Error("copy refused"));
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy], [data-copy-from]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    if (text === null) {
      var source = document.querySelector(button.getAttribute("data-copy-from"));
      text = source ? (source.value !== undefined ? source.value : source.textContent) : "";
    }
    var label = button.getAttribute("data-label") || button.textContent;
    button.setAttribute("data-label", label);
    copyText(text).then(function () {
      button.textContent = "Copied";
      button.classList.add("is-copied");
      window.agentplaneCopied = text;
    }, function () {
      button.textContent = "Press Ctrl+C";
    });
    setTimeout(function () {
      button.textContent = label;
      button.classList.remove("is-copied");
    }, 2000);
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
