// The key holder's console (/me): sign in with the key (exchanged for a cookie scoped to
// /me), then the key's balance, limits, usage chart, history and own requests, CSV of
// them, and ready-to-copy snippets. It calls only /me/api/*.

import { api, qs } from './api.js';
import { chart, destroyCharts } from './charts.js';
import { append, budgetBar, card, clear, h, pager, table } from './dom.js';
import { money, num, when } from './format.js';
import { hooks, st, t } from './state.js';

const app = document.getElementById('app');
const view = { histOffset: 0, reqOffset: 0 };

function langButton(again) {
  return h('button', { id: 'lang', type: 'button', onclick: () => { st.lang = st.lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('qp.lang', st.lang); again(); } }, t('language'));
}

function renderLogin(message) {
  destroyCharts();
  document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('me_title');
  const input = h('input', { type: 'password', id: 'me-key', autocomplete: 'off', 'aria-label': t('me_key') });
  const msg = h('p', { class: 'msg', id: 'me-msg', role: 'alert' }, message || '');
  const form = h('form', {
    class: 'login', id: 'me-login',
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('/me/login', { method: 'POST', body: { key: input.value }, quiet: true });
        input.value = '';
        await render();
      } catch (err) {
        msg.textContent = err.status === 401 ? t('me_login_failed') : (t('error_prefix') + err.message);
      }
    },
  },
  h('h1', {}, t('me_title')),
  h('p', { class: 'hint' }, t('me_login_hint')),
  h('label', {}, t('me_key'), input),
  h('button', { type: 'submit', class: 'primary', id: 'me-login-btn' }, t('login')),
  langButton(() => renderLogin(message)),
  msg);
  // An invite code makes a new key, shown once.
  const code = h('input', { id: 'me-code', autocomplete: 'off', 'aria-label': t('me_code') });
  const got = h('div', { id: 'me-redeemed', role: 'status' });
  const redeem = h('form', {
    class: 'login', id: 'me-redeem',
    onsubmit: async (e) => {
      e.preventDefault();
      clear(got);
      try {
        const r = await api('/me/redeem', { method: 'POST', body: { code: code.value }, quiet: true });
        code.value = '';
        append(got, [h('p', { class: 'warn' }, t('me_redeemed')), h('div', { class: 'secret' }, h('code', { class: 'fullkey', id: 'me-new-key' }, r.key))]);
      } catch (err) {
        append(got, [h('p', { class: 'msg' }, t('error_prefix') + err.message)]);
      }
    },
  }, h('h2', {}, t('me_have_code')), h('label', {}, t('me_code'), code),
  h('button', { type: 'submit', id: 'me-redeem-btn' }, t('me_redeem')), got);
  clear(app);
  app.appendChild(h('div', { class: 'login-wrap me-login' }, form, redeem));
  input.focus();
}

function limitsText(l) {
  const parts = [];
  const names = { dailyRequests: 'daily_requests', rpm: 'rpm', tpm: 'tpm', maxConcurrent: 'max_concurrent' };
  for (const [k, label] of Object.entries(names)) if (l[k] !== undefined && l[k] !== null) parts.push(t(label) + ' ' + num(l[k]));
  if (l.models) parts.push(t('col_model') + ': ' + l.models.join(', '));
  if (l.ips) parts.push('IP: ' + l.ips.join(', '));
  return parts.length ? parts.join(' · ') : t('none');
}

function snippets() {
  const base = location.origin;
  const key = t('me_your_key');
  const blocks = [
    ['OpenAI SDK (Python)', 'from openai import OpenAI\nclient = OpenAI(base_url="' + base + '/v1", api_key="' + key + '")\nr = client.chat.completions.create(model="deepseek-chat", messages=[{"role": "user", "content": "hi"}])\nprint(r.choices[0].message.content)'],
    ['Anthropic SDK / Claude Code', 'export ANTHROPIC_BASE_URL=' + base + '\nexport ANTHROPIC_API_KEY=' + key + '\nclaude'],
    ['Codex / OpenAI Responses', 'export OPENAI_BASE_URL=' + base + '/v1\nexport OPENAI_API_KEY=' + key],
    ['curl', 'curl ' + base + '/v1/chat/completions \\\n  -H "Authorization: Bearer ' + key + '" \\\n  -H "Content-Type: application/json" \\\n  -d \'{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}\''],
  ];
  return h('div', { class: 'snippets', id: 'me-snippets' }, blocks.map(([title, code]) => {
    const btn = h('button', { class: 'copy', type: 'button', onclick: async () => {
      try { await navigator.clipboard.writeText(code); btn.textContent = t('copied'); } catch (_) { /* no clipboard */ }
    } }, t('copy'));
    return h('div', { class: 'snippet' }, h('div', { class: 'snippet-head' }, h('strong', {}, title), btn), h('pre', { class: 'reply' }, code));
  }));
}

async function render() {
  destroyCharts();
  let s;
  try {
    const who = await api('/me/session', { quiet: true });
    if (!who.authenticated) return renderLogin('');
    s = await api('/me/api/summary', { quiet: true });
  } catch (e) {
    return renderLogin(e.status === 401 ? '' : t('error_prefix') + e.message);
  }
  st.session = { role: 'holder', currency: s.currency };
  document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('me_title');
  const k = s.key;
  const main = h('main', { id: 'main' });
  clear(app);
  append(app, [
    h('header', { class: 'top' },
      h('div', { class: 'brand' }, t('me_title')),
      h('div', { class: 'right' }, langButton(render),
        h('button', { id: 'me-logout', onclick: async () => { try { await api('/me/logout', { method: 'POST', quiet: true }); } catch (_) { /* gone */ } renderLogin(); } }, t('logout')))),
    h('div', { id: 'banner' }),
    main,
  ]);
  const props = h('dl', { class: 'props', id: 'me-key-props' },
    h('dt', {}, t('col_key')), h('dd', {}, h('code', {}, k.key), k.name ? ' · ' + k.name : ''),
    h('dt', {}, t('status')), h('dd', {}, h('span', { class: 'pill ' + k.status, id: 'me-status' }, t('st_' + k.status))),
    h('dt', {}, t('remaining')), h('dd', { id: 'me-remaining' }, k.remaining === null ? t('unlimited') : money(k.remaining)),
    h('dt', {}, t('used')), h('dd', { id: 'me-used' }, money(k.used) + (k.quota === null ? '' : ' / ' + money(k.quota))),
    h('dt', {}, t('expires_at')), h('dd', {}, when(k.expiresAt)),
    h('dt', {}, t('limits')), h('dd', {}, limitsText(k.limits || {})),
    k.refill ? [h('dt', {}, t('refill_interval')), h('dd', {}, k.refill.interval + ' · ' + money(k.refill.amount))] : null);
  const chartBox = h('div', { class: 'chart', id: 'me-chart' });
  const hist = h('div', { id: 'me-history' });
  const reqs = h('div', { id: 'me-requests' });
  // The user's and team's budgets: a call needs room in each of them too.
  const budgets = (s.budgets || []).map((b) => h('div', { class: 'me-budget', 'data-kind': b.kind },
    h('div', { class: 'lbl' }, t('budget_' + b.kind) + ' · ' + b.name + (b.enabled ? '' : ' · ' + t('st_disabled'))),
    budgetBar(b.used, b.quota),
    h('p', { class: 'muted small' }, t('remaining') + ' ' + (b.remaining === null ? t('unlimited') : money(b.remaining)) +
      ' · ' + t('used') + ' ' + money(b.used) + (b.quota === null ? '' : ' / ' + money(b.quota)))));
  const others = s.otherKeys ? card(t('me_other_keys'), h('div', { id: 'me-other-keys' }, table([
    { key: 'key', label: t('col_key'), render: (x) => h('code', {}, x.key) },
    { key: 'name', label: t('name') },
    { key: 'status', label: t('status'), render: (x) => h('span', { class: 'pill ' + x.status }, t('st_' + x.status)) },
    { key: 'used', label: t('used'), num: true, render: (x) => money(x.used) + (x.quota === null ? '' : ' / ' + money(x.quota)) },
  ], s.otherKeys, { cls: 'me-other-keys' }))) : null;
  append(main, [
    card(t('me_balance'), budgetBar(k.used, k.quota), props, budgets.length ? h('div', { id: 'me-budgets' }, budgets) : null,
      h('p', { class: 'hint' }, t('me_more_quota'))),
    others,
    card(t('me_ask_more'), askMore()),
    card(t('me_usage_chart'), chartBox),
    card(t('me_requests'), reqs),
    card(t('usage_history'), hist),
    card(t('me_snippets'), snippets()),
  ]);
  await Promise.all([fillRequests(reqs, chartBox), fillHistory(hist)]);
  main.setAttribute('data-ready', '');
}

// Ask the operator for more quota: one request waits at a time; earlier ones and their
// answers below.
function askMore() {
  const amount = h('input', { id: 'me-ask-amount', inputmode: 'decimal', size: 10 });
  const reason = h('input', { id: 'me-ask-reason', maxlength: 500, size: 40 });
  const msg = h('p', { class: 'msg', id: 'me-ask-msg', role: 'alert' });
  const list = h('div', { id: 'me-ask-list' });
  const fill = async () => {
    const r = await api('/me/api/quota-requests', { quiet: true });
    clear(list);
    if (!r.requests.length) return;
    append(list, [table([
      { key: 'createdAt', label: t('col_time'), render: (x) => when(x.createdAt) },
      { key: 'amount', label: t('amount'), num: true, render: (x) => money(x.amount) },
      { key: 'status', label: t('status'), render: (x) => h('span', { class: 'pill qr-' + x.status, 'data-status': x.status }, t('qr_' + x.status) + (x.status === 'approved' && x.granted !== null ? ' +' + money(x.granted) : '')) },
      { key: 'note', label: t('qr_note'), render: (x) => x.note || '' },
    ], r.requests, { cls: 'me-asks' })]);
  };
  const send = async (e) => {
    e.preventDefault();
    const n = Number(amount.value.trim());
    const body = { amount: Number.isFinite(n) && amount.value.trim() ? n : amount.value.trim() };
    if (reason.value.trim()) body.reason = reason.value.trim();
    try {
      await api('/me/api/quota-requests', { method: 'POST', body, quiet: true });
      msg.textContent = t('me_ask_sent');
      msg.classList.add('ok');
      amount.value = '';
      reason.value = '';
      await fill();
    } catch (err) {
      msg.classList.remove('ok');
      msg.textContent = t('error_prefix') + err.message;
    }
  };
  fill();
  return h('div', {},
    h('form', { class: 'toolbar', id: 'me-ask', onsubmit: send },
      h('label', {}, t('me_ask_amount'), amount), h('label', {}, t('me_ask_reason'), reason),
      h('button', { type: 'submit', class: 'primary', id: 'me-ask-btn' }, t('me_ask_send'))),
    msg, list);
}

async function fillRequests(box, chartBox) {
  const limit = 50;
  const r = await api('/me/api/requests?' + qs({ limit, offset: view.reqOffset }));
  clear(box);
  append(box, [
    h('div', { class: 'card-tools' }, h('a', { class: 'btn', id: 'me-csv', href: '/me/api/export.csv', download: 'my-requests.csv' }, t('export_csv_all'))),
    table([
      { key: 'timestamp', label: t('col_time'), render: (x) => when(x.timestamp) },
      { key: 'model', label: t('col_model') },
      { key: 'endpoint', label: t('col_endpoint') },
      { key: 'promptTokens', label: t('col_tokens'), num: true, render: (x) => num(x.promptTokens) + ' + ' + num(x.completionTokens) },
      { key: 'cost', label: t('col_cost'), num: true, render: (x) => money(x.cost) },
      { key: 'status', label: t('status'), num: true },
      { key: 'latencyMs', label: t('col_latency'), num: true },
    ], r.requests, { cls: 'me-requests' }),
    pager(r.total, limit, view.reqOffset, async (o) => { view.reqOffset = o; await fillRequests(box, null); }),
  ]);
  if (chartBox) {
    // Tokens a day over the calls on this page (the newest first).
    const days = new Map();
    for (const x of r.requests.slice().reverse()) {
      const d = when(x.timestamp).slice(0, 10);
      days.set(d, (days.get(d) || 0) + x.promptTokens + x.completionTokens);
    }
    if (!days.size) return append(chartBox, [h('p', { class: 'muted' }, t('no_data'))]);
    chart(chartBox, {
      animation: false, tooltip: { trigger: 'axis' }, grid: { left: 50, right: 16, top: 16, bottom: 30 },
      xAxis: { type: 'category', data: [...days.keys()] }, yAxis: { type: 'value' },
      series: [{ type: 'bar', name: 'Tokens', barMaxWidth: 48, data: [...days.values()] }],
    });
  }
}

async function fillHistory(box) {
  const limit = 50;
  const r = await api('/me/api/history?' + qs({ limit, offset: view.histOffset }));
  clear(box);
  append(box, [
    table([
      { key: 'timestamp', label: t('col_time'), render: (x) => when(x.timestamp) },
      { key: 'amount', label: t('amount'), num: true, render: (x) => money(x.amount) },
      { key: 'reason', label: t('reason') },
      { key: 'remaining', label: t('remaining'), num: true, render: (x) => (x.remaining === null ? t('unlimited') : money(x.remaining)) },
    ], r.history, { cls: 'me-history' }),
    pager(r.total, limit, view.histOffset, async (o) => { view.histOffset = o; await fillHistory(box); }),
  ]);
}

hooks.signedOut = (m) => renderLogin(m);
render();
