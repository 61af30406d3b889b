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

    // Signup handoff: post the one-time sign-in token to the organization's host.
    var handoff = document.querySelector("form[data-autosubmit]");
    if (handoff) handoff.submit();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
