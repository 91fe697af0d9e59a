// rollguard console: sign an approval answer in the browser (WebCrypto Ed25519).
//
// The approver's key file (PEM PKCS#8, as `rollguard keys generate` writes it) is read here,
// imported as a non-extractable CryptoKey and used to sign; it is never sent anywhere. The page
// sends only the signed ApprovalResponse; the server verifies it before publishing.
// The signed bytes are the canonical JSON of streams/signing.py: every field but `signature`,
// keys sorted, no whitespace.
"use strict";

(() => {
  const panel = document.getElementById("answer");
  if (!panel) {
    return;
  }
  const $ = (id) => document.getElementById(id);
  let key = null;

  function canonical(value) {
    if (Array.isArray(value)) {
      return "[" + value.map(canonical).join(",") + "]";
    }
    if (value !== null && typeof value === "object") {
      const keys = Object.keys(value).filter((k) => k !== "signature").sort();
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
    }
    return JSON.stringify(value);
  }

  function pemToDer(text) {
    const found = text.match(/-----BEGIN PRIVATE KEY-----([\s\S]+?)-----END PRIVATE KEY-----/);
    if (!found) {
      throw new Error("not a PEM PKCS#8 private key; choose the .key file made by " +
                      "'rollguard keys generate'");
    }
    const binary = atob(found[1].replace(/\s+/g, ""));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function base64(buffer) {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary);
  }

  function say(text, kind) {
    const result = $("result");
    result.textContent = text;
    result.className = "result " + (kind || "");
  }

  async function importKey() {
    const file = $("keyfile").files[0];
    if (!file) {
      throw new Error("choose your private key file first");
    }
    const der = pemToDer(await file.text());
    key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    $("keyfile").value = "";
    $("key-status").textContent = "key imported (kept in this page only, not extractable)";
    $("key-status").className = "status ok";
    $("approve").disabled = false;
    $("deny").disabled = false;
  }

  async function answer(decision) {
    const identity = $("identity").value.trim();
    if (!identity) {
      throw new Error("enter your approver identity (as in approvers.yaml, e.g. user:alice)");
    }
    if (!key) {
      throw new Error("import your key first");
    }
    const response = {
      type: "approval_response",
      request_id: panel.dataset.requestId,
      service: panel.dataset.service,
      approver: identity,
      decision: decision,
      ts: Date.now() / 1000,
      comment: $("comment").value,
    };
    const message = new TextEncoder().encode(canonical(response));
    response.signature = base64(await crypto.subtle.sign({ name: "Ed25519" }, key, message));
    $("approve").disabled = true;
    $("deny").disabled = true;
    const reply = await fetch("/api/responses", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(response),
      credentials: "same-origin",
    });
    const body = await reply.json();
    if (reply.ok && body.ok) {
      say(`${decision} of ${body.request_id} signed by ${identity} and published to ` +
          `${body.topic} (partition ${body.partition}, offset ${body.offset}). ` +
          "rollguard decides on it now; reload to see the outcome.", "ok");
      panel.dataset.answered = decision;
    } else {
      say(`refused (HTTP ${reply.status}): ${body.error || reply.statusText}`, "error");
      $("approve").disabled = false;
      $("deny").disabled = false;
      panel.dataset.refused = String(reply.status);
    }
  }

  function guarded(action) {
    return () => action().catch((err) => say(String(err.message || err), "error"));
  }

  $("load-key").addEventListener("click", guarded(importKey));
  $("approve").addEventListener("click", guarded(() => answer("approve")));
  $("deny").addEventListener("click", guarded(() => answer("deny")));
})();
