// The member's web wallet: what the phone shows at the till.
// The token lives in sessionStorage (this tab only) and goes only into Authorization headers.
"use strict";

(() => {
  const TOKEN_KEY = "pg.wallet.token";
  const TOKEN_RE = /^pgmt_[0-9]{3}_[A-Za-z0-9_-]{43}$/;
  const WHOLE_RE = /^[1-9][0-9]{0,11}$/;
  const HISTORY_PAGE = 20;
  const CODE_RETRY_MS = 3000;
  const $ = id => document.getElementById(id);
  const unit = document.body.dataset.unit;
  const state = { token: null, memberId: null, slot: null, stepS: 30, offsetMs: 0, refreshAtMs: 0,
                  codeTimer: null, stopFeed: null, historyBefore: null, history: [], coupons: [], accounts: [],
                  balance: null, lastPayment: null };

  const base = () => `/v1/members/${encodeURIComponent(state.memberId)}`;
  const call = (path, options = {}) => PG.api(path, { token: state.token, ...options });
  const points = n => `${PG.number(n)} ${unit}`;

  // -- sign-in ------------------------------------------------------------------------

  async function signIn(token) {
    const error = $("sign-in-error");
    PG.clear(error);
    if (!TOKEN_RE.test(token)) { PG.show(error, PG.t("error.token_format")); return false; }
    state.token = token;
    let me;
    try {
      me = (await call("/v1/me")).data;
    } catch (e) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      PG.show(error, PG.problemText(e));
      return false;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    Object.assign(state, { memberId: me.member_id, slot: me.slot, stepS: me.code_step_s });
    $("sign-in").hidden = true;
    $("wallet").hidden = false;
    $("sign-out").hidden = false;
    document.body.dataset.member = me.member_id;
    refreshCode();
    refreshBalance();
    refreshHistory();
    refreshCoupons();
    refreshAccounts();
    startFeed();
    return true;
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (state.stopFeed) state.stopFeed();
    clearTimeout(state.codeTimer);
    Object.assign(state, { token: null, memberId: null, slot: null, stopFeed: null, history: [], coupons: [],
                           accounts: [], balance: null, lastPayment: null });
    // Nothing of the wallet stays on the page for the next person.
    for (const id of ["history", "coupons", "accounts", "cashout-account"]) $(id).replaceChildren();
    for (const id of ["barcode", "qr"]) $(id).removeAttribute("src");
    for (const id of ["code-digits", "available", "held", "live-status"]) $(id).textContent = "";
    delete document.body.dataset.member;
    delete $("code-card").dataset.code;
    $("paid").hidden = true;
    $("wallet").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    $("token").value = "";
    if (reason) PG.show($("sign-in-error"), reason);
  }

  function unauthorized() { signOut(PG.t("error.unauthorized")); }

  function failed(e, el) {
    if (e instanceof PG.ApiError && e.status === 401) { unauthorized(); return; }
    PG.show(el, PG.problemText(e));
  }

  // -- the code -----------------------------------------------------------------------

  async function refreshCode() {
    clearTimeout(state.codeTimer);
    if (!state.token) return;
    const error = $("code-error");
    try {
      const card = (await call(`${base()}/devices/${state.slot}/code.json`)).data;
      state.offsetMs = Date.parse(card.server_time) - Date.now();
      state.refreshAtMs = Date.parse(card.refresh_at);
      $("barcode").src = card.code128_svg;
      $("qr").src = card.qr_png;
      $("code-digits").textContent = card.code.replace(/(\d{4})(?=\d)/g, "$1 ");
      $("code-card").dataset.code = card.code;
      PG.clear(error);
      tick();
      // A new code when this one's step ends (on the gateway's clock, not the phone's).
      state.codeTimer = setTimeout(refreshCode, Math.max(250, state.refreshAtMs - serverNow() + 100));
    } catch (e) {
      failed(e, error);
      if (state.token) state.codeTimer = setTimeout(refreshCode, CODE_RETRY_MS);
    }
  }

  const serverNow = () => Date.now() + state.offsetMs;

  function tick() {
    if (!state.refreshAtMs) return;
    const leftS = Math.max(0, Math.ceil((state.refreshAtMs - serverNow()) / 1000));
    $("countdown-text").textContent = PG.t("wallet.countdown", { s: leftS });
    $("countdown-bar").style.width = `${Math.min(100, (leftS / state.stepS) * 100)}%`;
  }

  // -- the live feed: a payment shows at once, and a fresh code with it ---------------------

  function startFeed() {
    if (state.stopFeed) state.stopFeed();
    const status = $("live-status");
    state.stopFeed = PG.follow(`${base()}/events/live`, state.token, {
      event: (kind, event) => onEvent(kind, event),
      state: s => { status.dataset.state = s; status.textContent = PG.t(s === "live" ? "common.live" : "common.reconnecting"); },
      unauthorized,
    });
  }

  function onEvent(kind, event) {
    if (kind === "payment") {
      state.lastPayment = event;
      showPayment();
      refreshCode();  // the code just used is burned; the next one is ready
    }
    state.balance = { ...(state.balance || {}), available: event.available_after, held: event.held_after };
    renderBalance();
    refreshHistory();
    if (kind === "payment" || kind === "cancel" || kind === "refund" || kind === "reversal") refreshCoupons();
  }

  function showPayment() {
    const event = state.lastPayment;
    if (!event) return;
    const d = event.details || {};
    $("paid-store").textContent = d.store_name || d.merchant_name || d.partner || d.merchant_id || "";
    $("paid-amount").textContent = d.amount !== undefined ? PG.money(d.amount, d.currency || "KRW") : "";
    const discount = d.discount ? PG.money(d.discount, d.currency || "KRW") : "";
    $("paid-discount").textContent = discount;
    $("paid-discount").hidden = $("paid-discount-label").hidden = !discount;
    $("paid-points").textContent = points(-event.points);
    $("paid-balance").textContent = points(event.available_after);
    $("paid").dataset.paymentId = d.payment_id || "";
    $("paid").hidden = false;
  }

  // -- balance and history --------------------------------------------------------------

  async function refreshBalance() {
    try {
      state.balance = (await call(base())).data;
      renderBalance();
    } catch (e) { failed(e, $("code-error")); }
  }

  function renderBalance() {
    const b = state.balance;
    if (!b) return;
    $("available").textContent = points(b.available);
    $("held").textContent = points(b.held);
    const expiring = $("expiring");
    if (b.next_expiry) PG.show(expiring, PG.t("wallet.expiring", { points: points(b.next_expiry.points), date: PG.date(b.next_expiry.expires_at) }));
    else PG.clear(expiring);
  }

  async function refreshHistory(more = false) {
    try {
      const query = `?limit=${HISTORY_PAGE}` + (more && state.historyBefore ? `&before=${encodeURIComponent(state.historyBefore)}` : "");
      const page = (await call(`${base()}/history${query}`)).data;
      state.history = more ? state.history.concat(page.items) : page.items;
      state.historyBefore = page.next_before;
      renderHistory();
    } catch (e) { failed(e, $("code-error")); }
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren(...state.history.map(item => {
      const li = PG.element("li");
      li.dataset.kind = item.kind;
      const what = PG.element("div", "what");
      const d = item.details || {};
      const where = d.store_name || d.merchant_name || d.partner || d.affiliate_id || "";
      what.append(PG.element("strong", "", PG.t("kind." + item.kind)), document.createTextNode(where ? " · " + where : ""),
                  PG.element("span", "when", PG.time(item.at)));
      const change = item.points !== 0 ? item.points : -item.held;
      const amount = PG.element("div", "amount");
      amount.append(PG.element("span", change > 0 ? "plus" : "minus", (change > 0 ? "+" : "") + points(change)),
                    PG.element("span", "when", PG.t("wallet.balance_after", { points: PG.number(item.available_after) })));
      li.append(what, amount);
      return li;
    }));
    $("history-empty").hidden = state.history.length > 0;
    $("history-more").hidden = !state.historyBefore;
  }

  // -- coupons -----------------------------------------------------------------------------

  async function refreshCoupons() {
    try {
      state.coupons = (await call(`${base()}/coupons`)).data.coupons;
      renderCoupons();
    } catch (e) { failed(e, $("claim-error")); }
  }

  function couponTerms(c) {
    const parts = [];
    const dsc = c.discount || {};
    if (dsc.kind === "percent") {
      parts.push(PG.t("wallet.coupon_percent", { percent: dsc.percent }));
      if (dsc.cap) parts.push(PG.t("wallet.coupon_cap", { cap: PG.money(dsc.cap, c.currency) }));
    } else if (dsc.kind === "fixed") {
      parts.push(PG.t("wallet.coupon_fixed", { amount: PG.money(dsc.amount, c.currency) }));
    }
    if (c.min_spend) parts.push(PG.t("wallet.coupon_min", { min: PG.money(c.min_spend, c.currency) }));
    parts.push(PG.t("wallet.coupon_until", { date: PG.date(c.valid_until) }));
    return parts.join(", ");
  }

  function renderCoupons() {
    $("coupons").replaceChildren(...state.coupons.map(c => {
      const li = PG.element("li");
      const what = PG.element("div", "what");
      what.append(PG.element("strong", "", c.title), PG.element("span", "when", couponTerms(c)),
                  PG.element("span", "when mono", c.code));
      li.append(what, PG.element("span", "badge " + (c.state === "issued" ? "ok" : "warn"), PG.t("wallet.coupon_state." + c.state)));
      return li;
    }));
    $("coupons-empty").hidden = state.coupons.length > 0;
  }

  async function claim(event) {
    event.preventDefault();
    const error = $("claim-error"), result = $("claim-result");
    PG.clear(error, result);
    const campaignId = $("claim-campaign").value;
    if (!campaignId) { PG.show(error, PG.t("error.choose_campaign")); return; }
    try {
      const coupon = (await call(`${base()}/coupons`, { method: "POST", body: { campaign_id: campaignId }, idempotent: true })).data;
      PG.show(result, PG.t("wallet.claimed", { title: coupon.title, code: coupon.code }));
      refreshCoupons();
    } catch (e) { failed(e, error); }
  }

  // -- cash-out ----------------------------------------------------------------------------

  async function refreshAccounts() {
    try {
      state.accounts = (await call(`${base()}/bank-accounts`)).data.bank_accounts;
      renderAccounts();
    } catch (e) { failed(e, $("cashout-error")); }
  }

  function renderAccounts() {
    $("accounts").replaceChildren(...state.accounts.map(a => {
      const li = PG.element("li");
      li.append(PG.element("span", "", `${a.bank_code} ${a.account_number_masked}`), PG.element("span", "when", a.holder_name));
      return li;
    }));
    $("accounts-empty").hidden = state.accounts.length > 0;
    const select = $("cashout-account");
    const chosen = select.value;
    select.replaceChildren(...state.accounts.map(a => {
      const option = PG.element("option", "", `${a.bank_code} ${a.account_number_masked} (${a.holder_name})`);
      option.value = a.bank_account_id;
      return option;
    }));
    if (chosen) select.value = chosen;
  }

  async function link(event) {
    event.preventDefault();
    const error = $("link-error"), result = $("link-result");
    PG.clear(error, result);
    const body = { bank_code: $("bank-code").value.trim(), account_number: $("account-number").value.trim(),
                   holder_name: $("holder-name").value.trim() };
    if (!/^[0-9]{3}$/.test(body.bank_code)) { PG.show(error, PG.t("error.bank_code")); return; }
    if (!/^[0-9]{6,20}$/.test(body.account_number)) { PG.show(error, PG.t("error.account_number")); return; }
    if (!body.holder_name || body.holder_name.length > 60) { PG.show(error, PG.t("error.holder_name")); return; }
    try {
      const account = (await call(`${base()}/bank-accounts`, { method: "POST", body })).data;
      PG.show(result, PG.t("wallet.linked", { masked: account.account_number_masked }));
      $("account-number").value = "";
      await refreshAccounts();
      $("cashout-account").value = account.bank_account_id;
    } catch (e) { failed(e, error); }
  }

  async function cashOut(event) {
    event.preventDefault();
    const error = $("cashout-error"), result = $("cashout-result");
    PG.clear(error, result);
    const text = $("cashout-points").value.trim();
    if (!WHOLE_RE.test(text)) { PG.show(error, PG.t("error.points_whole")); return; }
    const account = $("cashout-account").value;
    if (!account) { PG.show(error, PG.t("error.choose_account")); return; }
    try {
      const cashout = (await call(`${base()}/cashouts`, { method: "POST", body: { points: Number(text), bank_account_id: account },
                                                           idempotent: true })).data;
      const message = PG.t("wallet.cashout." + cashout.state, { amount: PG.number(cashout.amount), fee: PG.number(cashout.fee_points),
                                                                reason: cashout.reason || "" });
      if (cashout.state === "failed") PG.show(error, message); else PG.show(result, message);
      $("cashout-points").value = "";
      refreshBalance();
    } catch (e) { failed(e, error); }
  }

  // -- points exchange -----------------------------------------------------------------------

  async function exchange(event) {
    event.preventDefault();
    const error = $("exchange-error"), result = $("exchange-result");
    PG.clear(error, result);
    const partner = $("exchange-partner").value;
    const member = $("exchange-member").value.trim();
    const text = $("exchange-points").value.trim();
    if (!partner) { PG.show(error, PG.t("error.choose_partner")); return; }
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(member)) { PG.show(error, PG.t("error.partner_member_id")); return; }
    if (!WHOLE_RE.test(text)) { PG.show(error, PG.t("error.points_whole")); return; }
    try {
      const record = (await call(`${base()}/exchanges`, { method: "POST", idempotent: true,
        body: { partner, partner_member_id: member, points: Number(text) } })).data;
      const message = PG.t("wallet.exchange." + record.state, { points: PG.number(record.points), received: PG.number(record.received),
                                                                unit: record.received_unit || "", rate: record.rate || "",
                                                                reason: record.reason || "" });
      if (record.state === "refused") PG.show(error, message); else PG.show(result, message);
      $("exchange-points").value = "";
      refreshBalance();
    } catch (e) { failed(e, error); }
  }

  // -- start -----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", event => { event.preventDefault(); signIn($("token").value.trim()); });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("history-more").addEventListener("click", () => refreshHistory(true));
    $("claim-form").addEventListener("submit", claim);
    $("link-form").addEventListener("submit", link);
    $("cashout-form").addEventListener("submit", cashOut);
    $("exchange-form").addEventListener("submit", exchange);
    if (!$("exchange-partner").options.length) {
      $("exchange-form").hidden = true;
      $("exchange-none").hidden = false;
    }
    if ($("claim-campaign").options.length <= 1) $("claim-none").hidden = false;
    document.addEventListener("pg:language", () => { tick(); renderBalance(); renderHistory(); renderCoupons(); showPayment(); });
    setInterval(tick, 250);
    // A link from `make serve` carries the token in the fragment, which browsers never send to a
    // server; it is taken into sessionStorage and removed from the address bar at once.
    const fragment = new URLSearchParams(location.hash.slice(1));
    const offered = fragment.get("token");
    if (offered) history.replaceState(null, "", location.pathname + location.search);
    const token = offered || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
  });
})();
