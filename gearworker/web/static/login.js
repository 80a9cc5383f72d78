// The login form: the password goes as JSON with the page's security token (see security.py).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const problem = document.getElementById("login-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    problem.textContent = "";
    const token = (document.cookie.match(/(?:^|;\s*)gw_csrf=([^;]+)/) || [])[1] || "";
    try {
      const response = await fetch("/api/login", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": token },
        body: JSON.stringify({ password: form.password.value }),
      });
      // Back to the tab the page was sent here from: the redirect to /login kept its #fragment.
      if (response.ok) { location.replace(`/${location.hash}`); return; }
      problem.textContent = (await response.json()).error || `The web app answered ${response.status}.`;
    } catch (err) {
      problem.textContent = "The web app could not be reached.";
    }
  });
});
