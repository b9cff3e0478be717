// keygate console: plain JavaScript, no library, no build step.
//
// - The admin key lives in one variable of this closure: no cookie, no web storage, no
//   URL. Reloading or closing the tab forgets it.
// - Every API call is a same-origin fetch with the key as a bearer header; the API's base is
//   the directory this script was loaded from, so the router may be mounted under any path.
// - Data from the API is rendered with textContent (and SVG attributes), never as HTML.
"use strict";

(() => {
  const script = document.currentScript;
  const base = new URL(".", script ? script.src : location.href);
  let adminKey = null;

  const $ = (id) => document.getElementById(id);
  const views = ["login", "keys", "key", "owners", "owner", "usage", "audit"];
  // The tab each view is under.
  const tabOf = { key: "keys", owner: "owners" };
  const state = {
    // Each paged list's cursor: the `after` of its next page.
    after: { keys: null, owners: null, ownerKeys: null },
    auditBefore: null,
    current: null, // the key shown in the detail view
    owner: null, // the owner shown in the owner view
    confirmAction: null,
    chart: null, // the usage chart's data, to redraw it at another width
    // Each list shows the answer to its latest request only (an older one arriving late is
    // dropped).
    seq: { keys: 0, owners: 0, ownerKeys: 0, usage: 0, audit: 0 },
  };

  // --- helpers ------------------------------------------------------------------------------

  /** An element with text content and attributes (never HTML). */
  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  /** `2026-11-30T13:00:00.000Z` as `2026-11-30 13:00:00`. */
  function when(at) {
    if (!at) return "never";
    return String(at).replace("T", " ").replace(/\.\d+Z$|Z$/, "");
  }

  function status(text) {
    $("status").textContent = text;
  }

  function words(text) {
    return text.split(/[\s,]+/).filter((w) => w.length > 0);
  }

  /** `2027-01-31` (midnight UTC) or a full RFC 3339 time; empty: null. */
  function expiry(text) {
    const t = text.trim();
    if (t === "") return null;
    return /^\d{4}-\d{2}-\d{2}$/.test(t) ? t + "T00:00:00Z" : t;
  }

  class ApiError extends Error {
    constructor(status, problem) {
      const detail = problem && (problem.detail || problem.title);
      const field = problem && problem.field ? " (" + problem.field + ")" : "";
      super((detail || "HTTP " + status) + field);
      this.status = status;
    }
  }

  /** One call to the admin API: the parsed JSON answer (null for 204), or an ApiError. */
  async function api(method, path, body) {
    if (adminKey === null) throw new ApiError(401, { detail: "not signed in" });
    const headers = { Authorization: "Bearer " + adminKey, Accept: "application/json" };
    const init = {
      method,
      headers,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
    };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(new URL(path, base), init);
    } catch (e) {
      throw new ApiError(0, { detail: "the admin API cannot be reached" });
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (!response.ok) {
      if (response.status === 401 && path !== "keys?limit=1") {
        signOut("The admin key was refused (401): sign in again.");
      }
      throw new ApiError(response.status, data);
    }
    return data;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && String(v).trim() !== "") q.set(k, String(v).trim());
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  function show(view) {
    for (const v of views) $("view-" + v).hidden = v !== view;
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.view === (tabOf[view] || view)) {
        tab.setAttribute("aria-current", "page");
      } else {
        tab.removeAttribute("aria-current");
      }
    }
    const heading = $("view-" + view).querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }

  /** Runs `work`, showing its failure in `where` (an element) or the status line. */
  async function guarded(work, where) {
    if (where) where.textContent = "";
    try {
      return await work();
    } catch (e) {
      const message = e instanceof ApiError ? e.message : String(e);
      if (where) where.textContent = message;
      else status("Error: " + message);
      return undefined;
    }
  }

  // --- sign in and out ----------------------------------------------------------------------

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("login-key");
    const candidate = input.value.trim();
    input.value = "";
    $("login-error").textContent = "";
    if (!candidate) return;
    adminKey = candidate;
    try {
      await api("GET", "keys?limit=1");
    } catch (e) {
      adminKey = null;
      $("login-error").textContent =
        e.status === 401
          ? "This key was refused (401): check it, and that it is not revoked or expired."
          : e.status === 403
            ? "This key is not an admin key (403): it needs keygate:admin:read or keygate:admin:write."
            : "Sign-in failed: " + e.message;
      input.focus();
      return;
    }
    $("nav").hidden = false;
    status("Signed in. The key is kept in this tab's memory only.");
    show("keys");
    loadKeys(false);
    loadEnvironments();
  });

  function signOut(message) {
    adminKey = null;
    state.current = null;
    state.owner = null;
    state.chart = null;
    $("nav").hidden = true;
    for (const id of [
      "keys-body", "owners-body", "owner-keys-body", "owner-fields", "usage-body", "audit-body",
      "usage-chart", "key-fields",
    ]) {
      $(id).replaceChildren();
    }
    environments([]);
    for (const d of document.querySelectorAll("dialog")) if (d.open) d.close();
    $("login-error").textContent = message || "";
    status(message ? "" : "Signed out: the key is forgotten.");
    show("login");
    $("login-key").focus();
  }

  $("sign-out").addEventListener("click", () => signOut());

  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      const view = tab.dataset.view;
      show(view);
      if (view === "keys") loadKeys(false);
      if (view === "owners") loadOwners(false);
      if (view === "usage") loadUsage();
      if (view === "audit") loadAudit(false);
    });
  }

  // --- keys ---------------------------------------------------------------------------------

  function stateBadge(value) {
    return el("span", value, { class: "state state-" + value });
  }

  function cell(label, content, cls) {
    const td = el("td", null, { "data-label": label });
    if (cls) td.className = cls;
    if (content instanceof Node) td.append(content);
    else td.textContent = content === null || content === undefined ? "" : String(content);
    return td;
  }

  /** A row of a key list, with its Manage button. */
  function keyRow(key) {
    const tr = el("tr", null, { "data-key-id": key.id });
    tr.append(
      cell("Name", key.name),
      cell("Id", key.id, "id"),
      cell("Owner", key.owner || ""),
      cell("State", stateBadge(key.state)),
      cell("Scopes", key.scopes.join(" ")),
      cell("Last used", when(key.last_used_at)),
    );
    tr.append(manageCell(key.name + " (" + key.id + ")", () => openKey(key.id)));
    return tr;
  }

  /** The last cell of a list's row: a Manage button, labelled for what it opens. */
  function manageCell(what, open) {
    const button = el("button", "Manage", { type: "button", class: "manage" });
    button.setAttribute("aria-label", "Manage " + what);
    button.addEventListener("click", open);
    return cell("", button);
  }

  /**
   * Loads a page of one of the paged lists into its table: the first page (replacing the
   * rows), or with `more` the next one. `list` names the API path, the answer's array, the
   * row maker and the elements (`{id}-body`, `{id}-more`, `{id}-empty`); `params` the filters.
   */
  async function loadPage(list, more, params) {
    const seq = ++state.seq[list.name];
    if (!more) state.after[list.name] = null;
    const page = await guarded(() =>
      api(
        "GET",
        list.path + query({ ...params, after: more ? state.after[list.name] : null, limit: 50 }),
      ),
    );
    if (!page || seq !== state.seq[list.name]) return;
    const body = $(list.id + "-body");
    if (!more) body.replaceChildren();
    for (const item of page[list.items]) body.append(list.row(item));
    state.after[list.name] = page.next;
    $(list.id + "-more").hidden = !page.next;
    $(list.id + "-empty").hidden = body.children.length > 0;
    status(body.children.length + " " + list.noun + " shown.");
  }

  const KEYS = { name: "keys", id: "keys", path: "keys", items: "keys", row: keyRow, noun: "key(s)" };

  function loadKeys(more) {
    return loadPage(KEYS, more, {
      search: $("keys-search").value,
      owner: $("keys-owner").value,
      environment: $("keys-environment").value,
      state: $("keys-state").value,
    });
  }

  $("keys-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadKeys(false);
  });
  $("keys-more").addEventListener("click", () => loadKeys(true));
  // Picking an environment lists its keys at once.
  $("keys-environment").addEventListener("change", () => loadKeys(false));

  /** The environment choices (of the key list's filter and the new-key form), from `list`. */
  function environments(list) {
    const filter = $("keys-environment");
    const create = $("create-environment");
    filter.replaceChildren(el("option", "all", { value: "" }));
    create.replaceChildren();
    for (const e of list) {
      const label = e.name + " (" + e.prefix + ")";
      filter.append(el("option", label, { value: e.name }));
      create.append(el("option", label + (e.default ? ", the default" : ""), { value: e.name }));
    }
    // Without named environments, there is nothing to pick.
    $("keys-environment-label").hidden = list.length === 0;
    $("create-environment-field").hidden = list.length === 0;
  }

  async function loadEnvironments() {
    const answer = await guarded(() => api("GET", "environments"));
    if (answer) environments(answer.environments);
  }

  async function openKey(id) {
    const key = await guarded(() => api("GET", "keys/" + encodeURIComponent(id)));
    if (!key) return;
    renderKey(key);
    show("key");
  }

  /** Named limits (an object of name -> policy) as text: "reads: 100/1s, writes: 10/1s". */
  function limitsText(limits) {
    const entries = Object.entries(limits || {});
    return entries.length ? entries.map(([name, policy]) => name + ": " + policy).join(", ") : "none";
  }

  /**
   * Named limits typed as text ("reads: 100/1s, writes: 10/1s burst 20"; empty: none) as the
   * object the API takes. The API checks the names and policies.
   */
  function limitsOf(text) {
    // No prototype: a name such as "__proto__" is a plain entry, sent for the API to refuse.
    const limits = Object.create(null);
    for (const item of text.split(",")) {
      const entry = item.trim();
      if (entry === "") continue;
      const colon = entry.indexOf(":");
      if (colon < 0) throw new Error('named limits are "name: policy" pairs separated by commas');
      const name = entry.slice(0, colon).trim();
      if (Object.hasOwn(limits, name)) throw new Error("named limit " + name + " is given twice");
      limits[name] = entry.slice(colon + 1).trim();
    }
    return limits;
  }

  /** Fills the description list `dl` with `rows` of [label, text or element]. */
  function fieldList(dl, rows) {
    dl.replaceChildren();
    for (const [label, value] of rows) {
      const dd = el("dd");
      if (value instanceof Node) dd.append(value);
      else dd.textContent = value;
      dl.append(el("dt", label), dd);
    }
  }

  /** A key's (or an owner's) quota, with the credits top-ups added to a credits quota. */
  function quotaText(record) {
    const quota = record.quota || "none";
    const credits = quota.startsWith("credits ") && record.quota_granted > 0;
    const noun = record.quota_granted === 1 ? " credit added" : " credits added";
    return credits ? quota + ", " + record.quota_granted + noun : quota;
  }

  /** One quota's balance: `734 left, resets 2026-12-04 00:00:00 UTC`. */
  function lineText(line) {
    return line.remaining + " left" + (line.resets_at ? ", resets " + when(line.resets_at) + " UTC" : "");
  }

  /** A key's balances (`GET /keys/{id}/quota`) in words. */
  function balanceText(balance) {
    const parts = [];
    if (balance.key) parts.push(lineText(balance.key));
    if (balance.owner) parts.push("its owner's quota: " + lineText(balance.owner));
    return parts.length ? parts.join("; ") : "no quota";
  }

  /** Fills `field` with `key`'s balances, unless another key (or a newer copy) is shown by then. */
  async function loadBalance(key, field) {
    let text;
    try {
      text = balanceText(await api("GET", "keys/" + encodeURIComponent(key.id) + "/quota"));
    } catch (e) {
      text = "unknown: " + (e instanceof ApiError ? e.message : String(e));
    }
    if (state.current === key) field.textContent = text;
  }

  function renderKey(key) {
    state.current = key;
    const left = el("span", "…", { id: "key-quota-left" });
    $("key-title").textContent = "Key " + key.name;
    const dl = $("key-fields");
    const rows = [
      ["Id", key.id],
      ["Name", key.name],
      ["Owner", key.owner || "none"],
      ["State", stateBadge(key.state)],
      ["Scopes", key.scopes.length ? key.scopes.join(" ") : "none"],
      ["Rate limit", key.rate_limit || "the services' default"],
      ["Quota", quotaText(key)],
      ["Quota left", left],
      ["Named limits", limitsText(key.limits)],
      ["Allowed IPs", key.allowed_ips.length ? key.allowed_ips.join(" ") : "anywhere"],
      ["Prefix", key.prefix],
      ["Environment", key.environment || "none"],
      ["Created", when(key.created_at)],
      ["Updated", when(key.updated_at)],
      ["Expires", key.expires_at ? when(key.expires_at) : "never"],
      ["Disabled", key.disabled_at ? when(key.disabled_at) : "no"],
      ["Revoked", key.revoked_at ? when(key.revoked_at) : "no"],
      ["Last used", when(key.last_used_at)],
      ["Rotated from", key.rotated_from || "none"],
      ["Metadata", JSON.stringify(key.metadata)],
    ];
    fieldList(dl, rows);
    loadBalance(key, left);
    $("edit-name-value").value = key.name;
    $("edit-scopes-value").value = key.scopes.join(" ");
    $("edit-rate-value").value = key.rate_limit || "";
    $("edit-quota-value").value = key.quota || "";
    $("edit-credits-value").value = "";
    const limits = limitsText(key.limits);
    $("edit-limits-value").value = limits === "none" ? "" : limits;
    $("edit-expiry-value").value = key.expires_at || "";
    const revoked = key.state === "revoked";
    $("key-disable").disabled = key.state !== "active";
    $("key-enable").disabled = key.state !== "disabled";
    $("key-revoke").disabled = revoked;
    $("key-rotate").disabled = revoked;
  }

  $("key-back").addEventListener("click", () => {
    show("keys");
    loadKeys(false);
  });

  /** A PUT (or `method`) on the current key from one of the edit forms. */
  function editForm(formId, path, body, method = "PUT") {
    $(formId).addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = state.current;
      if (!key) return;
      let payload;
      try {
        payload = body();
      } catch (e) {
        status("Error: " + e.message);
        return;
      }
      const updated = await guarded(() =>
        api(method, "keys/" + encodeURIComponent(key.id) + "/" + path, payload),
      );
      if (updated) {
        renderKey(updated);
        status("Saved: " + path + " of " + updated.name + ".");
      }
    });
  }

  editForm("edit-name", "name", () => ({ name: $("edit-name-value").value.trim() }));
  editForm("edit-scopes", "scopes", () => ({ scopes: words($("edit-scopes-value").value) }));
  editForm("edit-rate", "rate-limit", () => {
    const v = $("edit-rate-value").value.trim();
    return { rate_limit: v === "" ? null : v };
  });
  editForm("edit-quota", "quota", () => {
    const v = $("edit-quota-value").value.trim();
    return { quota: v === "" ? null : v };
  });
  editForm(
    "edit-credits",
    "credits",
    () => {
      const text = $("edit-credits-value").value.trim();
      if (!/^[0-9]+$/.test(text)) throw new Error("credits are a whole number, 1 or more");
      return { add: Number(text) };
    },
    "POST",
  );
  editForm("edit-limits", "limits", () => ({ limits: limitsOf($("edit-limits-value").value) }));
  editForm("edit-expiry", "expiry", () => ({ expires_at: expiry($("edit-expiry-value").value) }));

  // --- confirmation -------------------------------------------------------------------------

  /** Asks before `action` (an async function returning a status line). */
  function confirmThen(title, text, label, action, withGrace) {
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = label;
    $("confirm-grace").hidden = !withGrace;
    // Each rotation starts from the default grace: a 0 typed for an earlier one must not
    // silently revoke the next key at once.
    if (withGrace) $("confirm-grace-value").value = "86400";
    $("confirm-error").textContent = "";
    state.confirmAction = action;
    $("confirm-dialog").showModal();
    $("confirm-no").focus();
  }

  $("confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = state.confirmAction;
    if (!action) return;
    const yes = $("confirm-yes");
    yes.disabled = true;
    try {
      const done = await guarded(action, $("confirm-error"));
      if (done !== undefined) {
        state.confirmAction = null;
        $("confirm-dialog").close();
        status(done);
      }
    } finally {
      yes.disabled = false;
    }
  });
  $("confirm-no").addEventListener("click", () => $("confirm-dialog").close());
  $("confirm-dialog").addEventListener("close", () => {
    state.confirmAction = null;
  });

  function stateChange(buttonId, verb, past, warning) {
    $(buttonId).addEventListener("click", () => {
      const key = state.current;
      if (!key) return;
      confirmThen(
        verb + " key " + key.name + "?",
        warning + " (key " + key.id + ")",
        verb,
        async () => {
          const updated = await api(
            "POST",
            "keys/" + encodeURIComponent(key.id) + "/" + verb.toLowerCase(),
          );
          renderKey(updated);
          return "Key " + updated.name + " " + past + ".";
        },
      );
    });
  }

  stateChange("key-disable", "Disable", "disabled", "Requests with it are refused until it is enabled again.");
  stateChange("key-enable", "Enable", "enabled", "Requests with it are accepted again.");
  stateChange("key-revoke", "Revoke", "revoked", "Requests with it are refused for good: a revoked key cannot be enabled again.");

  $("key-rotate").addEventListener("click", () => {
    const key = state.current;
    if (!key) return;
    confirmThen(
      "Rotate key " + key.name + "?",
      "A new key replaces this one; the old key keeps working for the grace period, then expires. (key " + key.id + ")",
      "Rotate",
      async () => {
        const raw = $("confirm-grace-value").value.trim();
        const grace = Number(raw);
        // An empty field is not 0 (which revokes the old key at once): ask for a number.
        if (raw === "" || !Number.isInteger(grace) || grace < 0 || grace > 2592000) {
          $("confirm-grace-value").focus();
          throw "Enter the grace period as whole seconds from 0 to 2592000 (30 days).";
        }
        const rotated = await api("POST", "keys/" + encodeURIComponent(key.id) + "/rotate", {
          grace_seconds: grace,
        });
        renderKey(rotated.record);
        showSecret(rotated.key, rotated.record);
        return "Key " + key.name + " rotated: the new key is " + rotated.record.id + ".";
      },
      true,
    );
  });

  $("key-delete").addEventListener("click", () => {
    const key = state.current;
    if (!key) return;
    confirmThen(
      "Delete key " + key.name + "?",
      "The key and its record are deleted for good (its audit events stay). (key " + key.id + ")",
      "Delete",
      async () => {
        await api("DELETE", "keys/" + encodeURIComponent(key.id));
        state.current = null;
        show("keys");
        loadKeys(false);
        return "Key " + key.name + " deleted.";
      },
    );
  });

  $("key-usage").addEventListener("click", () => {
    if (!state.current) return;
    $("usage-key").value = state.current.id;
    $("usage-owner").value = "";
    show("usage");
    loadUsage();
  });
  $("key-audit").addEventListener("click", () => {
    if (!state.current) return;
    $("audit-key").value = state.current.id;
    $("audit-owner").value = "";
    show("audit");
    loadAudit(false);
  });

  // --- owners -------------------------------------------------------------------------------

  function ownerRow(owner) {
    const tr = el("tr", null, { "data-owner-id": owner.id });
    tr.append(
      cell("Name", owner.name),
      cell("Id", owner.id, "id"),
      cell("Shared rate limit", owner.rate_limit || "none"),
      cell("Created", when(owner.created_at)),
    );
    tr.append(manageCell("owner " + owner.name + " (" + owner.id + ")", () => openOwner(owner.id)));
    return tr;
  }

  const OWNERS = { name: "owners", id: "owners", path: "owners", items: "owners", row: ownerRow, noun: "owner(s)" };
  const OWNER_KEYS = { name: "ownerKeys", id: "owner-keys", path: "keys", items: "keys", row: keyRow, noun: "key(s) of the owner" };

  function loadOwners(more) {
    return loadPage(OWNERS, more, {});
  }

  function loadOwnerKeys(more) {
    if (!state.owner) return undefined;
    return loadPage(OWNER_KEYS, more, { owner: state.owner.id });
  }

  $("owners-more").addEventListener("click", () => loadOwners(true));
  $("owner-keys-more").addEventListener("click", () => loadOwnerKeys(true));

  /** Shows owner `id`: its record, then its keys. */
  async function openOwner(id) {
    const owner = await guarded(() => api("GET", "owners/" + encodeURIComponent(id)));
    if (!owner) return;
    renderOwner(owner);
    show("owner");
    await loadOwnerKeys(false);
  }

  /** Fills `field` with `owner`'s shared balance, unless another owner is shown by then. */
  async function loadOwnerBalance(owner, field) {
    let text;
    try {
      const balance = await api("GET", "owners/" + encodeURIComponent(owner.id) + "/quota");
      text = balance.quota ? lineText(balance.quota) : "no quota";
    } catch (e) {
      text = "unknown: " + (e instanceof ApiError ? e.message : String(e));
    }
    if (state.owner === owner) field.textContent = text;
  }

  function renderOwner(owner) {
    state.owner = owner;
    const left = el("span", "…", { id: "owner-quota-left" });
    $("owner-title").textContent = "Owner " + owner.name;
    $("owner-credits-value").value = "";
    const dl = $("owner-fields");
    const rows = [
      ["Id", owner.id],
      ["Name", owner.name],
      ["Keys", owner.keys === undefined ? "" : String(owner.keys)],
      ["Shared rate limit", owner.rate_limit || "none"],
      ["Shared quota", quotaText(owner)],
      ["Shared quota left", left],
      ["Shared named limits", limitsText(owner.limits)],
      ["Metadata", JSON.stringify(owner.metadata)],
      ["Created", when(owner.created_at)],
      ["Updated", when(owner.updated_at)],
    ];
    fieldList(dl, rows);
    loadOwnerBalance(owner, left);
  }

  $("owner-credits").addEventListener("submit", async (event) => {
    event.preventDefault();
    const owner = state.owner;
    if (!owner) return;
    const text = $("owner-credits-value").value.trim();
    if (!/^[0-9]+$/.test(text)) {
      status("Error: credits are a whole number, 1 or more");
      return;
    }
    const updated = await guarded(() =>
      api("POST", "owners/" + encodeURIComponent(owner.id) + "/credits", { add: Number(text) }),
    );
    if (updated) {
      // The answer has no key count: keep the one shown.
      renderOwner({ ...updated, keys: owner.keys });
      const noun = Number(text) === 1 ? " credit" : " credits";
      status("Saved: " + Number(text) + noun + " added to " + updated.name + ".");
    }
  });

  $("owner-back").addEventListener("click", () => {
    show("owners");
    loadOwners(false);
  });

  /** A bulk action on the shown owner's keys, after the confirmation. */
  function ownerChange(buttonId, verb, past, warning) {
    $(buttonId).addEventListener("click", () => {
      const owner = state.owner;
      if (!owner) return;
      confirmThen(
        verb + " every key of " + owner.name + "?",
        warning + " (owner " + owner.id + ")",
        verb + " its keys",
        async () => {
          const answer = await api(
            "POST",
            "owners/" + encodeURIComponent(owner.id) + "/" + verb.toLowerCase(),
          );
          await openOwner(owner.id);
          return answer.changed.length + " key(s) of " + owner.name + " " + past + ".";
        },
      );
    });
  }

  ownerChange("owner-disable", "Disable", "disabled", "Its active keys are refused until they are enabled again.");
  ownerChange("owner-enable", "Enable", "enabled", "Its disabled keys are accepted again (revoked keys stay revoked).");
  ownerChange("owner-revoke", "Revoke", "revoked", "All its keys are refused for good: revoked keys cannot be enabled again.");

  $("owner-usage").addEventListener("click", () => {
    if (!state.owner) return;
    $("usage-key").value = "";
    $("usage-owner").value = state.owner.id;
    show("usage");
    loadUsage();
  });
  $("owner-audit").addEventListener("click", () => {
    if (!state.owner) return;
    $("audit-key").value = "";
    $("audit-owner").value = state.owner.id;
    show("audit");
    loadAudit(false);
  });

  // --- create, and the key shown once -------------------------------------------------------

  $("new-key").addEventListener("click", () => {
    $("create-form").reset();
    $("create-error").textContent = "";
    $("create-dialog").showModal();
    $("create-name").focus();
  });
  $("create-cancel").addEventListener("click", () => $("create-dialog").close());

  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("create-name").value.trim() };
    const owner = $("create-owner").value.trim();
    if (owner) body.owner = owner;
    if (!$("create-environment-field").hidden) body.environment = $("create-environment").value;
    const scopes = words($("create-scopes").value);
    if (scopes.length) body.scopes = scopes;
    const expires = expiry($("create-expiry").value);
    if (expires) body.expires_at = expires;
    const rate = $("create-rate").value.trim();
    if (rate) body.rate_limit = rate;
    const submit = $("create-submit");
    submit.disabled = true;
    try {
      const created = await guarded(() => api("POST", "keys", body), $("create-error"));
      if (created) {
        $("create-dialog").close();
        showSecret(created.key, created.record);
        status("Key " + created.record.name + " created (" + created.record.id + ").");
        loadKeys(false);
      }
    } finally {
      submit.disabled = false;
    }
  });

  function showSecret(fullKey, record) {
    $("secret-id").textContent = "(" + record.name + ", id " + record.id + ")";
    $("secret-value").value = fullKey;
    $("secret-copied").textContent = "";
    $("secret-dialog").showModal();
    $("secret-value").select();
    $("secret-copy").focus();
  }

  $("secret-copy").addEventListener("click", async () => {
    const input = $("secret-value");
    try {
      await navigator.clipboard.writeText(input.value);
      $("secret-copied").textContent = "Copied to the clipboard.";
    } catch (e) {
      input.focus();
      input.select();
      let copied = false;
      try {
        copied = document.execCommand("copy");
      } catch (e2) {
        copied = false;
      }
      $("secret-copied").textContent = copied
        ? "Copied to the clipboard."
        : "The browser refused the clipboard: the key is selected, press Ctrl+C (or ⌘C).";
    }
  });
  $("secret-done").addEventListener("click", () => $("secret-dialog").close());
  // Once closed, the key leaves the page.
  $("secret-dialog").addEventListener("close", () => {
    $("secret-value").value = "";
    $("secret-copied").textContent = "";
  });

  // --- usage --------------------------------------------------------------------------------

  const DAY_MS = 86400000;

  function dayList(since, days) {
    const out = [];
    const start = Date.parse(since + "T00:00:00Z");
    for (let i = 0; i < days; i++) out.push(new Date(start + i * DAY_MS).toISOString().slice(0, 10));
    return out;
  }

  async function loadUsage() {
    const days = Number($("usage-days").value) || 30;
    const keyId = $("usage-key").value.trim();
    const owner = keyId ? "" : $("usage-owner").value.trim();
    const seq = ++state.seq.usage;
    const data = await guarded(() =>
      api("GET", "usage" + query({ key_id: keyId, owner, days })),
    );
    if (!data || seq !== state.seq.usage) return;
    const perDay = new Map(dayList(data.since, days).map((d) => [d, { allowed: 0, denied: 0 }]));
    let allowed = 0;
    let denied = 0;
    const body = $("usage-body");
    body.replaceChildren();
    for (const row of data.days) {
      const slot = perDay.get(row.day) || { allowed: 0, denied: 0 };
      slot.allowed += row.allowed;
      slot.denied += row.denied;
      perDay.set(row.day, slot);
      allowed += row.allowed;
      denied += row.denied;
      const tr = el("tr");
      tr.append(
        cell("Day", row.day),
        cell("Key", row.key_id, "id"),
        cell("Allowed", row.allowed),
        cell("Denied", row.denied),
      );
      body.append(tr);
    }
    const whose = keyId ? "Key " + keyId : owner ? "The keys of owner " + owner : "All keys";
    $("usage-summary").textContent =
      whose +
      ": " + allowed + " allowed, " + denied + " denied since " + data.since + " (UTC).";
    drawChart([...perDay.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)), whose);
  }

  /** Stacked bars (allowed below, denied above) per day, drawn as SVG elements. */
  function drawChart(days, whose) {
    state.chart = [days, whose];
    // Drawn at the width it is shown at, so its text stays readable on a phone.
    const W = Math.max(300, Math.min(1200, $("usage-chart").clientWidth || 800));
    const H = 220;
    const left = 48;
    const right = 12;
    const top = 12;
    const bottom = 36;
    const plotW = W - left - right;
    const plotH = H - top - bottom;
    const max = Math.max(1, ...days.map(([, c]) => c.allowed + c.denied));
    const nice = niceMax(max);
    const chart = svg("svg", {
      viewBox: "0 0 " + W + " " + H,
      role: "img",
      id: "usage-svg",
      "aria-labelledby": "usage-svg-title",
    });
    chart.append(
      svg("title", { id: "usage-svg-title" },
        "Requests per UTC day: " + whose),
    );
    for (let i = 0; i <= 4; i++) {
      const v = (nice * i) / 4;
      const y = top + plotH - (plotH * v) / nice;
      chart.append(svg("line", { x1: left, x2: W - right, y1: y, y2: y, class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, fmt(v)));
    }
    chart.append(svg("line", { x1: left, x2: W - right, y1: top + plotH, y2: top + plotH, class: "axis" }));
    const slot = plotW / Math.max(1, days.length);
    const barW = Math.max(1, slot * 0.7);
    const labelEvery = Math.ceil(days.length / Math.max(2, Math.floor(plotW / 56)));
    days.forEach(([day, c], i) => {
      const x = left + i * slot + (slot - barW) / 2;
      const hA = (plotH * c.allowed) / nice;
      const hD = (plotH * c.denied) / nice;
      const group = svg("g", { class: "day", "data-day": day, "data-allowed": c.allowed, "data-denied": c.denied });
      group.append(svg("title", {}, day + ": " + c.allowed + " allowed, " + c.denied + " denied"));
      if (c.allowed > 0) {
        group.append(svg("rect", { x, y: top + plotH - hA, width: barW, height: hA, class: "bar-allowed" }));
      }
      if (c.denied > 0) {
        group.append(svg("rect", { x, y: top + plotH - hA - hD, width: barW, height: hD, class: "bar-denied" }));
      }
      chart.append(group);
      // Every few days, counted back from the last (always labelled).
      if ((days.length - 1 - i) % labelEvery === 0) {
        chart.append(svg("text", { x: x + barW / 2, y: H - bottom + 16, "text-anchor": "middle" }, day.slice(5)));
      }
    });
    $("usage-chart").replaceChildren(chart);
  }

  /** The top of the scale: four whole ticks of 1, 2 or 5 times a power of ten. */
  function niceMax(max) {
    const raw = Math.max(1, max / 4);
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const step of [1, 2, 5, 10]) {
      if (step * pow >= raw) return 4 * Math.max(1, Math.ceil(step * pow));
    }
    return 4 * Math.ceil(raw);
  }

  function fmt(v) {
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  let redraw = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(redraw);
    redraw = requestAnimationFrame(() => {
      if (state.chart && !$("view-usage").hidden) drawChart(...state.chart);
    });
  });

  $("usage-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadUsage();
  });

  // --- audit --------------------------------------------------------------------------------

  async function loadAudit(more) {
    const seq = ++state.seq.audit;
    if (!more) state.auditBefore = null;
    const since = $("audit-since").value.trim();
    const page = await guarded(() =>
      api(
        "GET",
        "audit" +
          query({
            key_id: $("audit-key").value,
            // One or the other: the key wins.
            owner: $("audit-key").value.trim() ? "" : $("audit-owner").value,
            action: $("audit-action").value,
            outcome: $("audit-outcome").value,
            reason: $("audit-reason").value,
            since: /^\d{4}-\d{2}-\d{2}$/.test(since) ? since + "T00:00:00Z" : since,
            before: more ? state.auditBefore : null,
            limit: 50,
          }),
      ),
    );
    if (!page || seq !== state.seq.audit) return;
    const body = $("audit-body");
    if (!more) body.replaceChildren();
    for (const e of page.events) {
      const tr = el("tr", null, { "data-event-id": String(e.id) });
      const request = e.method
        ? e.method + " " + (e.route || "") + (e.status ? " → " + e.status : "")
        : "";
      let detail = e.detail || "";
      if (e.folded) {
        detail = e.folded.count + " denials until " + when(e.folded.last_at) +
          (e.folded.sample.length ? " (" + e.folded.sample.join(", ") + ")" : "");
      }
      tr.append(
        cell("At", when(e.at)),
        cell("Action", e.action),
        // An owner event names no key: the owner stands in its column.
        cell("Key", e.key_id || (e.owner ? "owner " + e.owner : ""), "id"),
        cell("Outcome", [e.outcome, e.reason].filter(Boolean).join(": ")),
        cell("Request", request),
        cell("Client", e.client_ip || ""),
        cell("Actor", e.actor || "", "id"),
        cell("Detail", detail),
      );
      body.append(tr);
    }
    state.auditBefore = page.next;
    $("audit-more").hidden = !page.next;
    $("audit-empty").hidden = body.children.length > 0;
    status(body.children.length + " event(s) shown.");
  }

  $("audit-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAudit(false);
  });
  $("audit-more").addEventListener("click", () => loadAudit(true));

  show("login");
  $("login-key").focus();
})();
