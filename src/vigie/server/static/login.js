"use strict";
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const key = document.getElementById("key").value.trim();
  const res = await fetch("/api/session", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ key }), credentials: "same-origin",
  });
  if (res.ok) { window.location.assign("/"); return; }
  const body = await res.json().catch(() => ({}));
  error.textContent = (body.error && body.error.message) || "Login failed.";
});
