/* The KaiCalls dashboard: sign-in, API keys and outbound webhooks, all through the public /v1 API with the
   session cookie. Plain JavaScript, no build step. A secret (a new key, a signing secret) is only ever put in
   the page, never in a URL or in browser storage, and is cleared when the page is left. */
"use strict";

(() => {
  const EVENT_TYPES = [
    "agent.created", "agent.updated", "agent.deleted",
    "call.started", "call.updated", "call.completed",
    "lead.created", "lead.updated",
  ];
  const WRITE_ROLES = new Set(["owner", "admin"]);
  const FOLLOW_MS = 15000; // how long a test send or retry is watched for its attempt
  const POLL_MS = 300;
  const REFRESH_PENDING_MS = 2000; // deliveries still pending are re-read this often…
  const REFRESH_PENDING_ROUNDS = 60; // …this many times at most
  const EXCERPT_CHARS = 300;
  const GRACE_CHOICES = [
    ["0", "No grace period: the old secret stops signing now"],
    ["3600", "1 hour"],
    ["86400", "24 hours"],
    ["604800", "7 days"],
  ];

  let csrfToken = "";
  let uidCounter = 0;
  const state = { me: null, biz: null, canWrite: false, gen: 0, expanded: new Set() };
  const refreshTimers = new WeakMap();
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  // ---- small helpers -------------------------------------------------------------------------

  const $ = (selector, root = document) => root.querySelector(selector);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const uid = (prefix) => `${prefix}-${++uidCounter}`;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  /** An element: h("button", {type: "button", onclick: fn}, "Text"). Text is always set as text. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "class") el.className = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  /** Replace an element's children, skipping the null, undefined and false that conditional parts give. */
  function fill(el, ...children) {
    el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  }

  function when(iso) {
    if (!iso) return null;
    const d = new Date(iso);
    return h("time", { datetime: iso, title: d.toISOString() }, dateTime.format(d));
  }

  function truncate(text, n) {
    return text.length > n ? `${text.slice(0, n)}…` : text;
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `The request failed (HTTP ${status}).`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  function signInUrl() {
    return `/dashboard?next=${encodeURIComponent(location.pathname + location.search + location.hash)}`;
  }

  /** Call the API. Unsafe methods carry the CSRF token; a 401 sends the person to sign in. */
  async function api(method, path, body, { redirectOn401 = true } = {}) {
    const headers = { Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { detail: "The service cannot be reached. Check your connection and try again." });
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401 && redirectOn401) location.assign(signInUrl());
      throw new ApiError(response.status, data);
    }
    return data;
  }

  const bizPath = (rest) => `/v1/businesses/${encodeURIComponent(state.biz)}${rest}`;

  async function busy(button, work) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      return await work();
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  function flash(el, text, kind = "ok") {
    el.className = `flash ${kind}`;
    el.textContent = text;
    el.hidden = false;
  }

  function pageError(err) {
    const el = $("#page-error");
    el.textContent = err instanceof Error ? err.message : String(err);
    el.hidden = false;
    const loading = $("#loading");
    if (loading) loading.hidden = true;
  }

  async function copyText(input, status) {
    try {
      await navigator.clipboard.writeText(input.value);
      status.textContent = "Copied. Paste it into your secret manager now.";
    } catch {
      input.focus();
      input.select();
      const copied = document.execCommand && document.execCommand("copy");
      status.textContent = copied
        ? "Copied. Paste it into your secret manager now."
        : "Copying was blocked: the text is selected, press Ctrl+C (⌘C on a Mac) to copy it.";
    }
  }

  // ---- forms and the API's validation errors ----------------------------------------------------

  function setInvalid(control, errorId) {
    if (control.dataset.hintIds === undefined) control.dataset.hintIds = control.getAttribute("aria-describedby") || "";
    control.setAttribute("aria-invalid", "true");
    control.setAttribute("aria-describedby", `${errorId} ${control.dataset.hintIds}`.trim());
  }

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((el) => el.remove());
    form.querySelectorAll("[aria-invalid]").forEach((control) => {
      control.removeAttribute("aria-invalid");
      if (control.dataset.hintIds) control.setAttribute("aria-describedby", control.dataset.hintIds);
      else control.removeAttribute("aria-describedby");
    });
    const general = $(".form-error", form);
    general.hidden = true;
    general.textContent = "";
  }

  /** Show a problem+json answer on the form: each error next to the field its loc names, the rest on top. */
  function showProblem(form, err) {
    clearErrors(form);
    const problem = (err && err.problem) || {};
    const unplaced = [];
    let first = null;
    for (const error of problem.errors || []) {
      const loc = Array.isArray(error.loc) ? error.loc : [];
      const name = loc[0] === "body" && loc.length > 1 ? String(loc[1]) : null;
      const field = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
      if (!field) {
        unplaced.push(error.msg);
        continue;
      }
      const id = uid("error");
      const message = h("p", { class: "field-error", id }, error.msg);
      const isGroup = field.matches("fieldset");
      const control = isGroup ? field : $("input, select, textarea", field);
      if (isGroup) $("legend", field).after(message);
      else control.after(message);
      setInvalid(control, id);
      first = first || (isGroup ? $("input:not([disabled])", field) : control);
    }
    const general = $(".form-error", form);
    if (unplaced.length || !first) {
      general.textContent = unplaced.length ? `${problem.detail || err.message} ${unplaced.join("; ")}` : err.message;
      general.hidden = false;
    }
    if (first) first.focus();
  }

  // ---- sign-in and the dashboard home -----------------------------------------------------------

  function safeNext() {
    const next = new URLSearchParams(location.search).get("next");
    if (!next) return null;
    let url;
    try {
      url = new URL(next, location.origin);
    } catch {
      return null;
    }
    const inside = url.pathname === "/dashboard" || url.pathname.startsWith("/dashboard/");
    return url.origin === location.origin && inside ? url.pathname + url.search + url.hash : null;
  }

  function showAccount(me) {
    state.me = me;
    csrfToken = me.csrf_token || "";
    $("#who").textContent = me.user.email;
    $("#account").hidden = false;
    $("#sign-out").addEventListener("click", async (ev) => {
      await busy(ev.currentTarget, async () => {
        try {
          await api("POST", "/v1/auth/logout", undefined, { redirectOn401: false });
        } catch (err) {
          if (err.status !== 401) {
            pageError(err);
            return;
          }
        }
        location.assign("/dashboard");
      });
    });
  }

  async function homePage() {
    const form = $("#sign-in-form");
    let me = null;
    try {
      me = await api("GET", "/v1/me", undefined, { redirectOn401: false });
    } catch (err) {
      if (err.status !== 401) pageError(err);
    }
    $("#loading").hidden = true;
    if (me && me.type === "user") {
      showSignedIn(me);
      return;
    }
    $("#sign-in").hidden = false;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const button = $("button[type=submit]", form);
      await busy(button, async () => {
        try {
          const body = { email: $("#email").value.trim(), password: $("#password").value };
          const out = await api("POST", "/v1/auth/login", body, { redirectOn401: false });
          $("#password").value = "";
          const next = safeNext();
          if (next) {
            location.assign(next);
            return;
          }
          $("#sign-in").hidden = true;
          showSignedIn({ type: "user", ...out });
        } catch (err) {
          showProblem(form, err);
        }
      });
    });
    $("#email").focus();
  }

  function showSignedIn(me) {
    showAccount(me);
    $("#home").hidden = false;
    $("#main").focus();
  }

  // ---- the settings page: business selector and tabs ----------------------------------------------

  async function settingsPage() {
    let me;
    try {
      me = await api("GET", "/v1/me");
    } catch (err) {
      if (err.status !== 401) pageError(err);
      return;
    }
    if (me.type !== "user") {
      location.assign(signInUrl());
      return;
    }
    showAccount(me);
    $("#loading").hidden = true;
    const memberships = me.memberships || [];
    if (!memberships.length) {
      $("#no-business").hidden = false;
      return;
    }
    const select = $("#business");
    for (const m of memberships) select.append(h("option", { value: m.business.id }, m.business.name));
    const wanted = new URLSearchParams(location.search).get("business");
    select.value = memberships.some((m) => m.business.id === wanted) ? wanted : memberships[0].business.id;
    select.addEventListener("change", () => selectBusiness(select.value));
    $("#business-picker").hidden = false;
    $("#tabs").hidden = false;
    setupTabs();
    setupKeys();
    setupWebhooks();
    window.addEventListener("pagehide", clearSecrets);
    selectBusiness(select.value);
  }

  function selectBusiness(id) {
    state.gen += 1;
    state.biz = id;
    state.expanded.clear();
    const membership = state.me.memberships.find((m) => m.business.id === id);
    state.canWrite = WRITE_ROLES.has(membership.role);
    $("#role-note").textContent = `Your role: ${membership.role}`;
    const url = new URL(location.href);
    url.searchParams.set("business", id);
    history.replaceState(null, "", url);
    $("#keys-read-only").hidden = state.canWrite;
    $("#keys-toolbar").hidden = !state.canWrite;
    $("#hooks-read-only").hidden = state.canWrite;
    $("#hooks-toolbar").hidden = !state.canWrite;
    $("#keys-flash").hidden = true;
    $("#hooks-flash").hidden = true;
    closeCreateKey();
    clearSecrets();
    closeAddEndpoint();
    loadKeys();
    loadEndpoints();
  }

  /** WAI-ARIA tabs with automatic activation: arrow keys, Home and End move between tabs. */
  function setupTabs() {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    const choose = (tab, focus) => {
      for (const t of tabs) {
        const on = t === tab;
        t.setAttribute("aria-selected", String(on));
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      }
      if (focus) tab.focus();
      const url = new URL(location.href);
      url.hash = tab.id === "tab-webhooks" ? "outbound-webhooks" : "api-keys";
      history.replaceState(null, "", url);
    };
    tabs.forEach((tab, i) => {
      tab.addEventListener("click", () => choose(tab, false));
      tab.addEventListener("keydown", (ev) => {
        const next = {
          ArrowRight: tabs[(i + 1) % tabs.length],
          ArrowLeft: tabs[(i - 1 + tabs.length) % tabs.length],
          Home: tabs[0],
          End: tabs[tabs.length - 1],
        }[ev.key];
        if (next) {
          ev.preventDefault();
          choose(next, true);
        }
      });
    });
    choose(location.hash === "#outbound-webhooks" ? tabs[1] : tabs[0], false);
  }

  function confirmDialog({ title, body, ok, extra }) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-body").textContent = body;
    $("#confirm-ok").textContent = ok;
    $("#confirm-extra").replaceChildren(...(extra ? [extra] : []));
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }

  function clearSecrets() {
    hideNewKey();
    document.querySelectorAll(".secret-slot").forEach((slot) => slot.replaceChildren());
  }

  // ---- API Keys tab -------------------------------------------------------------------------------

  function setupKeys() {
    const form = $("#create-key-form");
    $("#create-key-open").addEventListener("click", () => {
      hideNewKey();
      form.reset();
      clearErrors(form);
      form.hidden = false;
      $("#create-key-open").hidden = true;
      $("#key-name").focus();
    });
    $('[data-action="cancel"]', form).addEventListener("click", () => {
      closeCreateKey();
      $("#create-key-open").focus();
    });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = {
        name: $("#key-name").value,
        scopes: [...form.querySelectorAll('input[name="scopes"]:checked')].map((input) => input.value),
      };
      const day = $("#key-expires").value;
      if (day) body.expires_at = `${day}T00:00:00Z`;
      await busy($("button[type=submit]", form), async () => {
        try {
          const created = await api("POST", bizPath("/api-keys"), body);
          closeCreateKey();
          showNewKey(created);
          await loadKeys();
        } catch (err) {
          showProblem(form, err);
        }
      });
    });
    $("#new-key-copy").addEventListener("click", () => copyText($("#new-key-value"), $("#new-key-copied")));
    $("#new-key-done").addEventListener("click", () => {
      hideNewKey();
      $("#create-key-open").focus();
    });
  }

  function closeCreateKey() {
    const form = $("#create-key-form");
    form.reset();
    clearErrors(form);
    form.hidden = true;
    $("#create-key-open").hidden = false;
  }

  function showNewKey(created) {
    $("#new-key-name").textContent = created.name;
    $("#new-key-value").value = created.key;
    $("#new-key-copied").textContent = "";
    $("#new-key").hidden = false;
    $("#new-key").focus();
  }

  function hideNewKey() {
    $("#new-key-value").value = "";
    $("#new-key-name").textContent = "";
    $("#new-key-copied").textContent = "";
    $("#new-key").hidden = true;
  }

  function cell(label, ...content) {
    return h("td", { "data-label": label }, ...content);
  }

  function table(caption, headings, rows) {
    return h("div", { class: "table-wrap" },
      h("table", { class: "stack" },
        h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
        h("tbody", {}, rows)));
  }

  /** Fetch one list page into the element ``selector``: null (with the error or the empty state shown there)
   *  unless it has items, or if the business changed meanwhile. */
  async function loadPage(selector, path, empty, hint) {
    const gen = state.gen;
    const list = $(selector);
    list.setAttribute("aria-busy", "true");
    let page;
    try {
      page = await api("GET", bizPath(path));
    } catch (err) {
      if (gen === state.gen) list.replaceChildren(h("p", { class: "form-error" }, err.message));
      return null;
    } finally {
      list.removeAttribute("aria-busy");
    }
    if (gen !== state.gen) return null;
    if (!page.data.length) {
      list.replaceChildren(h("p", { class: "empty" }, empty, state.canWrite ? " " + hint : ""));
      return null;
    }
    return { list, page };
  }

  async function loadKeys() {
    const loaded = await loadPage("#keys-list", "/api-keys?limit=100", "No API keys yet.",
      "Create one for each integration that needs access.");
    if (!loaded) return;
    const { list, page } = loaded;
    const headings = ["Name", "Key", "Scopes", "Created", "Last used", "Expires"];
    if (state.canWrite) headings.push("Actions");
    const rows = page.data.map((key) => h("tr", {},
      cell("Name", key.name),
      cell("Key", h("code", { class: "key-prefix" }, key.prefix)),
      cell("Scopes", h("ul", { class: "chips" }, key.scopes.map((s) => h("li", {}, s)))),
      cell("Created", when(key.created_at)),
      cell("Last used", key.last_used_at ? when(key.last_used_at) : "Never"),
      cell("Expires", key.expires_at
        ? [new Date(key.expires_at) <= new Date() ? "Expired " : "", when(key.expires_at)] : "Never"),
      state.canWrite && cell("Actions", h("button", {
        type: "button", class: "danger-outline", "aria-label": `Delete key “${key.name}”`,
        onclick: (ev) => deleteKey(key, ev.currentTarget),
      }, "Delete"))));
    fill(list, table("API keys of this business", headings, rows),
      page.next_cursor ? h("p", { class: "muted" }, "Showing the newest 100 keys.") : null);
  }

  async function deleteKey(key, button) {
    const ok = await confirmDialog({
      title: "Delete this API key?",
      body: `The key “${key.name}” (${key.prefix}) stops working at once, everywhere it is used. This cannot be undone.`,
      ok: `Delete “${key.name}”`,
    });
    if (!ok) return;
    await busy(button, async () => {
      try {
        await api("DELETE", bizPath(`/api-keys/${encodeURIComponent(key.id)}`));
        flash($("#keys-flash"), `Deleted the key “${key.name}”. It no longer works.`);
      } catch (err) {
        flash($("#keys-flash"), err.message, "bad");
      }
    });
    await loadKeys();
  }

  // ---- Outbound Webhooks tab ----------------------------------------------------------------------

  function setupWebhooks() {
    $("#add-endpoint-open").addEventListener("click", () => {
      const slot = $("#add-endpoint-slot");
      $("#add-endpoint-open").hidden = true;
      slot.replaceChildren(endpointForm(null, (created) => {
        closeAddEndpoint();
        $("#add-endpoint-open").focus();
        if (created) afterCreate(created);
      }));
      $("input", slot).focus();
    });
  }

  function closeAddEndpoint() {
    $("#add-endpoint-slot").replaceChildren();
    $("#add-endpoint-open").hidden = false;
  }

  async function afterCreate(created) {
    flash($("#hooks-flash"), `Added the endpoint ${created.url}. Send a test event to check that it arrives.`);
    await loadEndpoints();
    const card = document.querySelector(`[data-endpoint-id="${CSS.escape(created.id)}"]`);
    if (card && state.canWrite) {
      showSecret(card, created.secret,
        "The endpoint's signing secret: your system uses it to verify the webhook-signature header. " +
        "Keep it in your secret manager; you can reveal it here again later.");
    }
  }

  /** The add or edit form. ``done(created?)`` is called on save (with the new endpoint) and on cancel. */
  function endpointForm(ep, done) {
    const p = uid("endpoint-form");
    const all = !ep || ep.event_types === null;
    const chosen = new Set((ep && ep.event_types) || []);
    const url = h("input", {
      id: `${p}-url`, name: "url", type: "url", inputmode: "url", autocomplete: "off", spellcheck: "false",
      required: true, placeholder: "https://example.com/webhooks/kaicalls", "aria-describedby": `${p}-url-hint`,
    });
    url.value = ep ? ep.url : "";
    const description = h("input", { id: `${p}-description`, name: "description", maxlength: "500", autocomplete: "off" });
    description.value = ep ? ep.description : "";
    const allRadio = h("input", { type: "radio", name: `${p}-which`, value: "all", checked: all });
    const someRadio = h("input", { type: "radio", name: `${p}-which`, value: "some", checked: !all });
    const boxes = EVENT_TYPES.map((type) => h("input", {
      type: "checkbox", name: "event_types", value: type, checked: chosen.has(type), disabled: all,
    }));
    const sync = () => boxes.forEach((box) => { box.disabled = allRadio.checked; });
    allRadio.addEventListener("change", sync);
    someRadio.addEventListener("change", sync);
    const save = h("button", { type: "submit", class: "primary" }, "Save");
    const form = h("form", { class: "card endpoint-form", novalidate: true, "aria-labelledby": `${p}-title` },
      h("h3", { id: `${p}-title` }, ep ? "Edit endpoint" : "Add an endpoint"),
      h("div", { class: "field", "data-field": "url" },
        h("label", { for: `${p}-url` }, "Destination URL"), url,
        h("p", { class: "hint", id: `${p}-url-hint` }, "Where KaiCalls sends events: your system's https:// address.")),
      h("div", { class: "field", "data-field": "description" },
        h("label", { for: `${p}-description` }, "Description (optional)"), description),
      h("fieldset", { class: "field", "data-field": "event_types" },
        h("legend", {}, "Event types"),
        h("label", {}, allRadio, " All event types, including ones added later"),
        h("label", {}, someRadio, " Only the types checked below"),
        h("div", { class: "checks" }, boxes.map((box) => h("label", {}, box, ` ${box.value}`)))),
      h("p", { class: "form-error", role: "alert", hidden: true }),
      h("div", { class: "actions" }, save, h("button", { type: "button", onclick: () => done(null) }, "Cancel")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = {
        url: url.value.trim(),
        description: description.value,
        event_types: someRadio.checked ? boxes.filter((box) => box.checked).map((box) => box.value) : null,
      };
      await busy(save, async () => {
        try {
          if (ep) {
            await api("PATCH", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}`), body);
            flash($("#hooks-flash"), `Saved the endpoint ${body.url}.`);
            done(null);
            await loadEndpoints();
          } else {
            done(await api("POST", bizPath("/webhook-endpoints"), body));
          }
        } catch (err) {
          showProblem(form, err);
        }
      });
    });
    return form;
  }

  async function loadEndpoints() {
    const loaded = await loadPage("#endpoints-list", "/webhook-endpoints?limit=100", "No webhook endpoints yet.",
      "Add one to have events sent to your own system.");
    if (!loaded) return;
    const { list, page } = loaded;
    const cards = page.data.map((ep) => endpointCard(ep));
    fill(list, cards,
      page.next_cursor ? h("p", { class: "muted" }, "Showing the newest 100 endpoints.") : null);
    cards.forEach((card, i) => loadDeliveries(page.data[i], card));
  }

  function badge(text, kind) {
    return h("span", { class: `badge ${kind}` }, text);
  }

  function healthFacts(ep) {
    const facts = [["Event types", ep.event_types === null ? "All event types" : ep.event_types.join(", ")]];
    const health = ep.health;
    if (health) {
      let rate = "No attempts in the last hour";
      if (health.attempts_last_hour) {
        const pct = health.success_rate === null ? "–" : `${Math.round(health.success_rate * 1000) / 10} %`;
        rate = `${pct} of ${plural(health.attempts_last_hour, "attempt")} succeeded` +
          (health.p95_ms === null ? "" : ` · p95 ${health.p95_ms} ms`);
      }
      facts.push(["Health (last hour)", rate]);
      const lag = health.lag_s === null ? "" : ` (oldest waiting ${Math.round(health.lag_s)} s)`;
      const waiting = health.backlog === 1 ? "1 delivery" : `${health.backlog} deliveries`;
      facts.push(["Waiting to be sent", `${waiting}${lag}`]);
      if (health.last_failure) facts.push(["Last failure", [health.last_failure, " · ", when(health.last_failure_at)]]);
    }
    if (!ep.enabled && ep.disabled_reason) facts.push(["Disabled because", ep.disabled_reason]);
    for (const notice of ep.notices || []) facts.push(["Notice", [notice.message, " · ", when(notice.created_at)]]);
    return h("dl", { class: "facts" }, facts.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
  }

  function endpointCard(ep) {
    const p = `ep-${ep.id}`;
    const title = `${p}-title`;
    const result = h("div", { class: "result", role: "status", "aria-live": "polite" });
    const editSlot = h("div", { class: "edit-slot" });
    const action = (text, handler, extra = {}) => h("button", {
      type: "button", "aria-describedby": title, ...extra,
      onclick: (ev) => handler(ev.currentTarget),
    }, text);
    const card = h("article", { class: "card endpoint", "aria-labelledby": title, "data-endpoint-id": ep.id },
      h("div", { class: "endpoint-head" },
        h("h3", { id: title, class: "endpoint-url" }, ep.url),
        ep.enabled ? badge("Enabled", "ok") : badge("Disabled", "off")),
      ep.description ? h("p", { class: "description" }, ep.description) : null,
      h("div", { class: "facts-slot" }, healthFacts(ep)),
      state.canWrite ? h("div", { class: "actions" },
        action("Send test event", (b) => sendTest(ep, card, b), { class: "primary" }),
        action("Edit", () => {
          editSlot.replaceChildren(endpointForm(ep, () => editSlot.replaceChildren()));
          $("input", editSlot).focus();
        }),
        ep.enabled ? action("Disable", (b) => setEnabled(ep, false, b)) : action("Enable", (b) => setEnabled(ep, true, b)),
        action("Reveal signing secret", (b) => revealSecret(ep, card, b)),
        action("Rotate secret", (b) => rotateSecret(ep, card, b)),
        action("Delete", (b) => deleteEndpoint(ep, b), { class: "danger-outline" })) : null,
      result,
      editSlot,
      h("div", { class: "secret-slot" }),
      h("section", { class: "deliveries", "aria-labelledby": `${p}-deliveries` },
        h("h4", { id: `${p}-deliveries` }, "Recent deliveries"),
        h("div", { class: "deliveries-body" }, h("p", { class: "muted" }, "Loading deliveries…"))));
    return card;
  }

  function showResult(card, kind, ...content) {
    const el = $(".result", card);
    el.className = `result ${kind}`;
    fill(el, content);
  }

  async function setEnabled(ep, enabled, button) {
    await busy(button, async () => {
      try {
        await api("PATCH", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}`), { enabled });
        flash($("#hooks-flash"), `${enabled ? "Enabled" : "Disabled"} the endpoint ${ep.url}.`);
      } catch (err) {
        flash($("#hooks-flash"), err.message, "bad");
      }
    });
    await loadEndpoints();
  }

  async function deleteEndpoint(ep, button) {
    const ok = await confirmDialog({
      title: "Delete this webhook endpoint?",
      body: `Events will no longer be sent to ${ep.url}, and its delivery history goes with it. This cannot be undone.`,
      ok: "Delete endpoint",
    });
    if (!ok) return;
    await busy(button, async () => {
      try {
        await api("DELETE", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}`));
        flash($("#hooks-flash"), `Deleted the endpoint ${ep.url}.`);
      } catch (err) {
        flash($("#hooks-flash"), err.message, "bad");
      }
    });
    await loadEndpoints();
  }

  function showSecret(card, secret, text) {
    const slot = $(".secret-slot", card);
    const id = uid("secret");
    const input = h("input", { id, readonly: true, spellcheck: "false", autocomplete: "off", class: "secret" });
    input.value = secret;
    const status = h("p", { class: "muted", role: "status" });
    slot.replaceChildren(h("div", { class: "secret-box" },
      h("p", {}, text),
      h("label", { for: id }, "Signing secret"),
      h("div", { class: "copy-row" }, input,
        h("button", { type: "button", onclick: () => copyText(input, status) }, "Copy")),
      status,
      h("button", { type: "button", onclick: () => slot.replaceChildren() }, "Hide secret")));
    input.focus();
  }

  async function revealSecret(ep, card, button) {
    await busy(button, async () => {
      try {
        const out = await api("GET", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}/secret`));
        showSecret(card, out.secret,
          "Your system verifies the webhook-signature header with this secret. Keep it in your secret manager.");
      } catch (err) {
        showResult(card, "bad", err.message);
      }
    });
  }

  async function rotateSecret(ep, card, button) {
    const id = uid("grace");
    const select = h("select", { id },
      GRACE_CHOICES.map(([value, text]) => h("option", { value, selected: value === "86400" }, text)));
    const ok = await confirmDialog({
      title: "Rotate the signing secret?",
      body: `A new secret is made for ${ep.url}. During the grace period every webhook carries two signatures, ` +
        "one with each secret, so your system keeps accepting them while you switch it to the new secret.",
      ok: "Rotate secret",
      extra: h("div", { class: "field" },
        h("label", { for: id }, "Keep the old secret signing beside the new one for"), select),
    });
    if (!ok) return;
    const grace = Number(select.value);
    await busy(button, async () => {
      try {
        const out = await api("POST", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}/secret/rotate`),
          { grace_seconds: grace });
        const until = grace
          ? `The old secret keeps signing beside it until ${dateTime.format(new Date(Date.now() + grace * 1000))}.`
          : "The old secret no longer signs.";
        showSecret(card, out.secret, `The new signing secret. ${until} Switch your system to the new one.`);
      } catch (err) {
        showResult(card, "bad", err.message);
      }
    });
  }

  // ---- test events, deliveries, attempts and retries ----------------------------------------------

  async function sendTest(ep, card, button) {
    await busy(button, async () => {
      showResult(card, "pending", "Sending a test event…");
      let sent;
      try {
        sent = await api("POST", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}/test`));
      } catch (err) {
        showResult(card, "bad", err.message);
        return;
      }
      await follow(ep, card, sent.delivery_id, 0, "Test event");
    });
  }

  async function retry(ep, card, delivery, button) {
    await busy(button, async () => {
      showResult(card, "pending", `Retrying the ${delivery.event_type} delivery…`);
      let before;
      try {
        before = lastAttempt(await api("GET", bizPath(`/deliveries/${encodeURIComponent(delivery.id)}`)));
        await api("POST", bizPath(`/deliveries/${encodeURIComponent(delivery.id)}/retry`));
      } catch (err) {
        showResult(card, "bad", err.message);
        return;
      }
      await follow(ep, card, delivery.id, before ? before.number : 0, `Retry of ${delivery.event_type}`);
    });
  }

  const lastAttempt = (delivery) => delivery.attempts[delivery.attempts.length - 1] || null;

  /** Watch a delivery until an attempt newer than ``after`` is recorded, then say how it went. */
  async function follow(ep, card, deliveryId, after, label) {
    const gen = state.gen;
    const deadline = Date.now() + FOLLOW_MS;
    let delivery = null;
    try {
      for (;;) {
        delivery = await api("GET", bizPath(`/deliveries/${encodeURIComponent(deliveryId)}`));
        const attempt = lastAttempt(delivery);
        if ((attempt && attempt.number > after) || Date.now() > deadline) break;
        await sleep(POLL_MS);
      }
    } catch (err) {
      showResult(card, "bad", err.message);
      return;
    }
    if (gen !== state.gen) return;
    const attempt = lastAttempt(delivery);
    if (!attempt || attempt.number <= after) {
      showResult(card, "pending", `${label}: not sent yet after ${FOLLOW_MS / 1000} s. It is still queued; ` +
        "the deliveries below show it once it is sent.");
    } else {
      showResult(card, ...attemptOutcome(label, delivery, attempt));
    }
    await Promise.all([loadDeliveries(ep, card), refreshFacts(ep, card)]);
  }

  function succeeded(attempt) {
    return attempt.response_status !== null && attempt.response_status >= 200 && attempt.response_status < 300;
  }

  function excerpt(body) {
    return body ? h("span", { class: "excerpt" }, " Response: ", h("code", {}, truncate(body, EXCERPT_CHARS))) : null;
  }

  function attemptOutcome(label, delivery, attempt) {
    if (succeeded(attempt)) {
      return ["ok", h("strong", {}, `${label}: delivered`),
        ` — your endpoint answered HTTP ${attempt.response_status} in ${attempt.duration_ms} ms.`,
        excerpt(attempt.response_body)];
    }
    const why = attempt.error_message || (attempt.response_status ? `HTTP ${attempt.response_status}` : attempt.error);
    let next = "";
    if (delivery.status === "pending" && delivery.next_attempt_at) {
      next = ` It will be tried again at ${dateTime.format(new Date(delivery.next_attempt_at))}.`;
    } else if (delivery.status === "failed") {
      next = " No more automatic tries: fix your endpoint, then use Retry below.";
    }
    return ["bad", h("strong", {}, `${label}: not delivered`), ` — ${why} (after ${attempt.duration_ms} ms).`,
      excerpt(attempt.response_body), next];
  }

  async function refreshFacts(ep, card) {
    try {
      const fresh = await api("GET", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}`));
      $(".facts-slot", card).replaceChildren(healthFacts(fresh));
    } catch {
      // The facts stay as they were; the next full load brings them up to date.
    }
  }

  const STATUS_LABELS = { succeeded: ["Delivered", "ok"], failed: ["Failed", "bad"] };

  function deliveryBadge(delivery) {
    const [text, kind] = STATUS_LABELS[delivery.status] ||
      (delivery.attempt_count ? ["Retrying", "warn"] : ["Pending", "warn"]);
    return badge(text, kind);
  }

  async function loadDeliveries(ep, card, round = 0) {
    clearTimeout(refreshTimers.get(card));
    const gen = state.gen;
    const body = $(".deliveries-body", card);
    let page;
    try {
      page = await api("GET", bizPath(`/webhook-endpoints/${encodeURIComponent(ep.id)}/deliveries?limit=10`));
    } catch (err) {
      body.replaceChildren(h("p", { class: "form-error" }, err.message));
      return;
    }
    if (gen !== state.gen || !card.isConnected) return;
    if (!page.data.length) {
      body.replaceChildren(h("p", { class: "empty" }, "No deliveries yet.",
        state.canWrite ? " Send a test event to see one here." : ""));
      return;
    }
    const headings = ["Event", "Status", "Attempts", "Last response", "Updated", "Actions"];
    const rows = page.data.flatMap((d) => deliveryRows(ep, card, d, headings.length));
    fill(body, table(`Recent deliveries to ${ep.url}`, headings, rows),
      h("p", { class: "hint" }, "The 10 newest deliveries. Those still pending update by themselves."));
    if (page.data.some((d) => d.status === "pending") && round < REFRESH_PENDING_ROUNDS) {
      refreshTimers.set(card, setTimeout(() => loadDeliveries(ep, card, round + 1), REFRESH_PENDING_MS));
    }
  }

  function deliveryRows(ep, card, d, columns) {
    const detailsId = uid("attempts");
    const details = h("tr", { class: "attempts-row", id: detailsId, hidden: true },
      h("td", { colspan: columns }, h("p", { class: "muted" }, "Loading attempts…")));
    const open = state.expanded.has(d.id);
    const toggle = h("button", {
      type: "button", "aria-expanded": String(open), "aria-controls": detailsId,
      "aria-label": `Attempts of ${d.event_type} delivery ${d.id}`,
    }, "Attempts");
    const show = async (expand) => {
      toggle.setAttribute("aria-expanded", String(expand));
      details.hidden = !expand;
      if (expand) state.expanded.add(d.id);
      else state.expanded.delete(d.id);
      if (expand) await loadAttempts(d, details.firstChild);
    };
    toggle.addEventListener("click", () => show(toggle.getAttribute("aria-expanded") !== "true"));
    if (open) show(true);
    const last = d.last_response_status !== null ? `HTTP ${d.last_response_status}` : d.last_error || "–";
    const row = h("tr", {},
      cell("Event", d.event_type, h("br"), h("code", { class: "id" }, d.id)),
      cell("Status", deliveryBadge(d)),
      cell("Attempts", String(d.attempt_count)),
      cell("Last response", last),
      cell("Updated", when(d.updated_at)),
      cell("Actions", h("div", { class: "row-actions" }, toggle,
        state.canWrite && d.status !== "succeeded" ? h("button", {
          type: "button", "aria-label": `Retry ${d.event_type} delivery ${d.id}`,
          onclick: (ev) => retry(ep, card, d, ev.currentTarget),
        }, "Retry") : null)));
    return [row, details];
  }

  async function loadAttempts(delivery, slot) {
    let full;
    try {
      full = await api("GET", bizPath(`/deliveries/${encodeURIComponent(delivery.id)}`));
    } catch (err) {
      slot.replaceChildren(h("p", { class: "form-error" }, err.message));
      return;
    }
    if (!full.attempts.length) {
      slot.replaceChildren(h("p", { class: "muted" }, "No attempts yet."));
      return;
    }
    slot.replaceChildren(h("ol", { class: "attempts" }, full.attempts.map((a) => h("li", {},
      h("div", {},
        h("strong", {}, `#${a.number}`), " ", when(a.started_at), ` · ${a.trigger} · `,
        succeeded(a) ? badge(`HTTP ${a.response_status}`, "ok")
          : badge(a.response_status !== null ? `HTTP ${a.response_status}` : a.error || "failed", "bad"),
        ` · ${a.duration_ms} ms`),
      a.error_message ? h("div", {}, "Why: ", a.error_message) : null,
      a.response_body ? h("div", { class: "excerpt" }, "Response: ", h("code", {}, truncate(a.response_body, EXCERPT_CHARS))) : null,
      h("div", { class: "muted" }, "Sent to ", h("code", {}, a.url))))));
  }

  // ---- start ----------------------------------------------------------------------------------------

  const start = document.body.dataset.page === "home" ? homePage : settingsPage;
  start().catch(pageError);
})();
