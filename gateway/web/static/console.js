// The operator console: sales as they happen, declines by reason, latency, partners, journal lag
// and today's settlement, from one server-sent event stream (GET /v1/ops/console/live).
"use strict";

(() => {
  const TOKEN_KEY = "pg.console.token";
  const TOKEN_RE = /^pgct_[A-Za-z0-9_-]{43}$/;
  const ROWS_MAX = 100;
  const $ = id => document.getElementById(id);
  const state = { token: null, session: null, stop: null, payments: [], summary: null };

  async function signIn(token) {
    const error = $("sign-in-error");
    PG.clear(error);
    if (!TOKEN_RE.test(token)) { PG.show(error, PG.t("error.console_token_format")); return; }
    try {
      state.session = (await PG.api("/v1/ops/console/session", { token })).data;
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      PG.show(error, PG.problemText(e));
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("sign-in").hidden = true;
    $("console").hidden = false;
    $("sign-out").hidden = false;
    renderWho();
    state.stop = PG.follow("/v1/ops/console/live", token, {
      event: (name, data) => (name === "payment" ? addPayment(data) : name === "summary" ? setSummary(data) : null),
      state: s => { $("live-status").dataset.state = s; $("live-status").textContent = PG.t(s === "live" ? "common.live" : "common.reconnecting"); },
      unauthorized: () => signOut(PG.t("error.operator_unauthorized")),
    });
  }

  function signOut(reason) {
    if (state.stop) state.stop();
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, session: null, stop: null, payments: [], summary: null });
    for (const table of ["payments", "declines", "partners", "settlement"]) $(table).tBodies[0].replaceChildren();
    $("console").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("who").textContent = $("live-status").textContent = "";
    $("token").value = "";
    if (reason) PG.show($("sign-in-error"), reason);
  }

  function renderWho() {
    const s = state.session;
    $("who").textContent = s ? PG.t("console.signed_in_as", { name: s.name, id: s.operator_id, until: PG.time(s.expires_at) }) : "";
  }

  const outcomeText = code => (code === "approved" ? PG.t("console.outcome.approved")
    : PG.has("decline." + code) ? PG.t("decline." + code) : code);

  // -- live payments -------------------------------------------------------------------

  function addPayment(item) {
    state.payments.unshift(item);
    state.payments.sort((a, b) => b.at_ms - a.at_ms);
    state.payments.length = Math.min(state.payments.length, ROWS_MAX);
    renderPayments(item.id);
  }

  function renderPayments(freshId) {
    const body = $("payments").tBodies[0];
    body.replaceChildren(...state.payments.map(p => {
      const tr = PG.element("tr", p.id === freshId ? "fresh" : "");
      tr.dataset.outcome = p.outcome;
      if (p.payment_id) tr.dataset.paymentId = p.payment_id;
      const outcome = PG.element("td");
      const badge = PG.element("span", "badge " + (p.outcome === "approved" ? "ok" : "bad"), outcomeText(p.outcome));
      badge.title = p.outcome;
      outcome.append(badge);
      tr.append(PG.element("td", "", PG.time(new Date(p.at_ms).toISOString())), PG.element("td", "", p.store_name),
                PG.element("td", "mono", p.terminal_id), PG.element("td", "num", PG.money(p.amount, p.currency)), outcome,
                PG.element("td", "num", p.outcome !== "approved" || p.points === null || p.points === undefined ? "–" : PG.number(p.points)),
                PG.element("td", "num", `${p.latency_ms.toFixed(1)} ms`), PG.element("td", "mono", p.payment_id || ""));
      return tr;
    }));
    $("payments-empty").hidden = state.payments.length > 0;
  }

  // -- the summary -----------------------------------------------------------------------

  const ms = v => (v === null || v === undefined ? "–" : `${v < 10 ? v.toFixed(2) : v.toFixed(0)} ms`);

  function setSummary(summary) {
    state.summary = summary;
    renderSummary();
  }

  function renderSummary() {
    const s = state.summary;
    if (!s) return;
    const sales = s.sales;
    $("approved").textContent = PG.number(sales.ok);
    $("declined").textContent = PG.number(sales.failed);
    for (const el of document.querySelectorAll(".window")) el.textContent = PG.t("console.window", { minutes: Math.round(sales.span_s / 60) });
    $("p50").textContent = ms(sales.latency_ms.p50);
    $("p95").textContent = ms(sales.latency_ms.p95);
    $("p99").textContent = ms(sales.latency_ms.p99);
    if (s.journal) {
      $("lag").textContent = `${PG.number(s.journal.lag)} ${PG.t("console.journal_lag_unit")}`;
      $("pending").textContent = PG.t("console.journal_pending", { n: PG.number(s.journal.pending) });
    } else {
      $("lag").textContent = PG.t("common.unavailable");
    }
    $("workers").textContent = PG.t("console.workers", { n: s.workers });

    const declines = Object.entries(sales.by_outcome);
    $("declines").tBodies[0].replaceChildren(...declines.map(([code, count]) => {
      const tr = PG.element("tr");
      tr.dataset.reason = code;
      const reason = PG.element("td");
      reason.append(PG.element("span", "", outcomeText(code)), document.createTextNode(" "), PG.element("code", "", code));
      tr.append(reason, PG.element("td", "num", PG.number(count)));
      return tr;
    }));
    $("declines-empty").hidden = declines.length > 0;

    $("partners").tBodies[0].replaceChildren(...s.partners.map(p => {
      const tr = PG.element("tr");
      tr.dataset.partner = p.partner;
      tr.dataset.circuit = p.circuit;
      const circuit = PG.element("td");
      circuit.append(PG.element("span", "badge " + (p.circuit === "closed" ? "ok" : p.circuit === "open" ? "bad" : "warn"),
                                PG.t("console.circuit." + p.circuit)));
      if (p.circuit === "open" && p.workers > 1) {
        circuit.append(document.createTextNode(" " + PG.t("console.circuit_workers", { open: p.circuit_open_workers, n: p.workers })));
      }
      tr.append(PG.element("td", "", p.partner), circuit, PG.element("td", "num", PG.number(p.calls)),
                PG.element("td", "num", PG.number(p.errors)), PG.element("td", "num", ms(p.latency_ms.p50)),
                PG.element("td", "num", ms(p.latency_ms.p99)));
      return tr;
    }));
    $("partners-empty").hidden = s.partners.length > 0;

    const settlement = s.settlement;
    $("settlement").tBodies[0].replaceChildren(...(settlement ? settlement.merchants : []).map(m => {
      const tr = PG.element("tr");
      tr.dataset.merchant = m.merchant_id;
      const y = m.yesterday;
      const yesterday = y.state === "settled" ? PG.t("console.yesterday.settled", { net: PG.number(y.net_payable_points) })
        : PG.t("console.yesterday." + y.state);
      tr.append(PG.element("td", "", m.merchant_name), PG.element("td", "", m.business_day),
                PG.element("td", "", `${m.cutoff} (${m.time_zone})`),
                PG.element("td", "num", `${PG.number(m.sales.count)} · ${PG.money(m.sales.amount, m.currency)}`),
                PG.element("td", "num", PG.number(m.payable_points)), PG.element("td", "", `${y.business_day}: ${yesterday}`));
      return tr;
    }));
    $("positions").textContent = settlement ? settlement.networks.map(n => PG.t("console.network_position",
      { partner: n.partner, points: PG.number(n.position_points) })).join(" · ") : PG.t("common.unavailable");
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", event => { event.preventDefault(); signIn($("token").value.trim()); });
    $("sign-out").addEventListener("click", () => signOut(""));
    document.addEventListener("pg:language", () => { renderWho(); renderPayments(); renderSummary(); });
    // `make serve` prints a link with the token in the fragment (never sent to a server); it is
    // taken into sessionStorage and removed from the address bar at once.
    const offered = new URLSearchParams(location.hash.slice(1)).get("token");
    if (offered) history.replaceState(null, "", location.pathname + location.search);
    const token = offered || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
  });
})();
