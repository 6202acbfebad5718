// The review console's one script: runs WebAuthn ceremonies for the page it is on and posts
// their results to the console. Registration: the "Register a passkey" button on
// /console/passkeys. Step-up: the "Approve with passkey" button of a request whose rule
// requires a passkey; the server binds the challenge to the request and its digest.
"use strict";
(function () {
  function enc(buffer) {
    const bytes = new Uint8Array(buffer);
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function dec(text) {
    const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
    return bytes.buffer;
  }
  async function post(url, csrf, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.error || "The server refused (HTTP " + response.status + ").");
    }
    return answer;
  }
  function say(text) {
    const status = document.getElementById("passkey-status");
    if (status) {
      status.textContent = text;
      status.setAttribute("data-state", "error");
    }
  }
  function failed(error) {
    if (error && error.name === "NotAllowedError") {
      return "The passkey confirmation was cancelled or not allowed; nothing was decided.";
    }
    return (error && error.message) || String(error);
  }

  const register = document.getElementById("register-passkey");
  if (register) {
    register.addEventListener("click", async () => {
      register.disabled = true;
      try {
        const csrf = register.dataset.csrf;
        const name = (document.getElementById("passkey-name") || {}).value || "";
        const options = await post("/console/passkeys/register/options", csrf, { name });
        const pk = options.publicKey;
        pk.challenge = dec(pk.challenge);
        pk.user.id = dec(pk.user.id);
        (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
        const created = await navigator.credentials.create({ publicKey: pk });
        const credential = {
          id: created.id,
          rawId: enc(created.rawId),
          type: created.type,
          response: {
            attestationObject: enc(created.response.attestationObject),
            clientDataJSON: enc(created.response.clientDataJSON),
            transports: created.response.getTransports ? created.response.getTransports() : [],
          },
          extensions: created.getClientExtensionResults(),
        };
        const done = await post("/console/passkeys/register", csrf, { credential });
        location.assign(done.location);
      } catch (error) {
        say(failed(error));
        register.disabled = false;
      }
    });
  }

  const approve = document.getElementById("approve-with-passkey");
  if (approve) {
    approve.addEventListener("click", async () => {
      approve.disabled = true;
      try {
        const { request, digest, csrf } = approve.dataset;
        const reason = (document.getElementById("reason") || {}).value || "";
        const base = "/console/requests/" + encodeURIComponent(request) + "/step-up";
        const options = await post(base + "/options", csrf, { digest });
        const pk = options.publicKey;
        pk.challenge = dec(pk.challenge);
        (pk.allowCredentials || []).forEach((c) => { c.id = dec(c.id); });
        const asserted = await navigator.credentials.get({ publicKey: pk });
        const credential = {
          id: asserted.id,
          rawId: enc(asserted.rawId),
          type: asserted.type,
          response: {
            authenticatorData: enc(asserted.response.authenticatorData),
            clientDataJSON: enc(asserted.response.clientDataJSON),
            signature: enc(asserted.response.signature),
            userHandle: asserted.response.userHandle ? enc(asserted.response.userHandle) : null,
          },
          extensions: asserted.getClientExtensionResults(),
        };
        const done = await post(base, csrf, { digest, reason, credential });
        location.assign(done.location);
      } catch (error) {
        say(failed(error));
        approve.disabled = false;
      }
    });
  }
})();
