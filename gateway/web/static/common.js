// pointgate pages: strings in two languages, calls to the gateway's API, and a live feed over fetch().
// Shared by wallet.js and console.js. No library: the pages must load fast on a phone and from
// the gateway alone (nothing from another origin).
"use strict";

const PG = (() => {
  const STRINGS = JSON.parse(document.getElementById("strings").textContent);
  const LANGUAGES = ["ko", "en"];
  const LANG_KEY = "pg.lang";
  let lang = LANGUAGES.includes(localStorage.getItem(LANG_KEY)) ? localStorage.getItem(LANG_KEY)
    : document.documentElement.lang;

  /** The string `key` in the current language, with {name} filled from `vars`. */
  function t(key, vars) {
    const text = (STRINGS[lang] && STRINGS[lang][key]) ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && name in vars ? String(vars[name]) : ""));
  }

  function has(key) { return key in STRINGS[lang]; }

  function applyLanguage() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-alt]")) el.alt = t(el.dataset.i18nAlt);
    for (const button of document.querySelectorAll("button.lang")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
    }
    document.dispatchEvent(new CustomEvent("pg:language"));
  }

  function setLanguage(next) {
    if (!LANGUAGES.includes(next)) return;
    lang = next;
    localStorage.setItem(LANG_KEY, next);  // a preference, not a secret
    applyLanguage();
  }

  const numberFormat = () => new Intl.NumberFormat(lang === "ko" ? "ko-KR" : "en-GB");
  function number(n) { return n === null || n === undefined ? "–" : numberFormat().format(n); }
  function money(amount, currency) {
    // Amounts are minor units; KRW has none, TWD and the others have two.
    const digits = ["KRW", "JPY"].includes(currency) ? 0 : 2;
    return new Intl.NumberFormat(lang === "ko" ? "ko-KR" : "en-GB", { style: "currency", currency,
      minimumFractionDigits: digits, maximumFractionDigits: digits }).format(amount / 10 ** digits);
  }
  function time(iso) {
    return new Date(iso).toLocaleString(lang === "ko" ? "ko-KR" : "en-GB",
      { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function date(iso) {
    return new Date(iso).toLocaleDateString(lang === "ko" ? "ko-KR" : "en-GB", { year: "numeric", month: "short", day: "numeric" });
  }

  class ApiError extends Error {
    constructor(status, code, detail) { super(detail || code); this.status = status; this.code = code; this.detail = detail; }
  }

  /** A localised message for an API error: ours for the codes we know, else the gateway's detail. */
  function problemText(error) {
    if (error instanceof ApiError && has("error." + error.code)) return t("error." + error.code);
    if (error instanceof ApiError && error.detail) return error.detail;
    return t("error.network");
  }

  function idempotencyKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, b => b.toString(16).padStart(2, "0")).join("");
  }

  /** One call to the gateway with the bearer token in its header (never in the URL). */
  async function api(path, { token, method = "GET", body, idempotent = false } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (idempotent) headers["Idempotency-Key"] = idempotencyKey();
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                     cache: "no-store", credentials: "omit" });
    } catch (e) {
      throw new ApiError(0, "network", "");
    }
    let document = null;
    try { document = await response.json(); } catch (e) { document = null; }
    if (!response.ok) {
      throw new ApiError(response.status, (document && document.code) || "http_" + response.status,
                         document && document.detail);
    }
    return { status: response.status, data: document };
  }

  /**
   * Follow a server-sent event stream with fetch() (EventSource cannot send the Authorization
   * header), reconnecting with Last-Event-ID after a drop. `on.event(name, data, id)` for each
   * event, `on.state("live"|"reconnecting")`, `on.unauthorized()` ends it. Returns stop().
   */
  function follow(path, token, on) {
    const controller = new AbortController();
    let lastEventId = null;
    let backoffMs = 500;
    let stopped = false;

    async function once() {
      const headers = { Authorization: "Bearer " + token, Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(path, { headers, signal: controller.signal, cache: "no-store", credentials: "omit" });
      if (response.status === 401) { stopped = true; on.unauthorized(); return; }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      on.state("live");
      backoffMs = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        let end;
        while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
          let name = "message", id = null;
          const data = [];
          for (const line of block.split(/\r?\n/)) {
            if (!line || line.startsWith(":")) continue;  // a comment: the server's keep-alive ping
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") name = text;
            else if (field === "data") data.push(text);
            else if (field === "id") id = text;
          }
          if (id) lastEventId = id;
          if (data.length) {
            let parsed;
            try { parsed = JSON.parse(data.join("\n")); } catch (e) { continue; }
            on.event(name, parsed, id);
          }
        }
      }
    }

    (async () => {
      while (!stopped) {
        try { await once(); } catch (e) { if (stopped || controller.signal.aborted) return; }
        if (stopped) return;
        on.state("reconnecting");
        await new Promise(resolve => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, 10000);
      }
    })();
    return () => { stopped = true; controller.abort(); };
  }

  function show(el, text) { el.textContent = text; el.hidden = !text; }
  function clear(...els) { for (const el of els) show(el, ""); }
  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;  // always text, never HTML: nothing a server sent can run
    return el;
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("button.lang")) {
      button.addEventListener("click", () => setLanguage(button.dataset.lang));
    }
    applyLanguage();
  });

  return { t, has, get lang() { return lang; }, setLanguage, number, money, time, date, api, follow, ApiError,
           problemText, show, clear, element };
})();
