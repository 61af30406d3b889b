// The chosen theme (the user menu's toggle) applies before the first paint; default: the system's.
// A file, not an inline script: the content security policy allows scripts from 'self' only.
try {
  var theme = localStorage.getItem("agentplane-theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch (e) {}
