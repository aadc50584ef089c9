// Channels: the upstreams calls go to — the config file's (read-only) and those added here —
// with health, keys and the last hour's numbers; add, edit, test, enable/disable, delete.

import { api } from './api.js';
import { append, card, clear, h, modal, table } from './dom.js';
import { money, num, when } from './format.js';
import { hooks, isAdmin, st, t } from './state.js';

const PROTOCOLS = ['chat', 'messages', 'responses'];

const lines = (s) => s.split('\n').map((x) => x.trim()).filter(Boolean);
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const intOr = (s) => (s.trim() === '' ? undefined : Number(s.trim()));

// `a=b` lines ↔ an object (model map), `Name: value` lines (headers).
function pairs(text, sep) {
  const out = {};
  for (const l of lines(text)) {
    const i = l.indexOf(sep);
    if (i > 0) out[l.slice(0, i).trim()] = l.slice(i + 1).trim();
  }
  return out;
}

function stateCell(u) {
  const s = u.health.state;
  // An operator's switch is said in the page's language; other reasons are the upstream's words.
  const reason = !u.enabled ? t('ch_by_operator') : u.health.reason;
  const pill = h('span', { class: 'pill ' + s, 'data-state': s, title: reason || '' }, t('ch_' + s));
  return h('div', {}, pill,
    reason ? h('div', { class: 'muted small err-text', title: reason }, reason) : null,
    u.health.since && s !== 'healthy' ? h('div', { class: 'muted small' }, when(u.health.since)) : null);
}

function keysCell(u) {
  if (!u.keys.length) return h('span', { class: 'muted' }, '—');
  return h('div', { class: 'keyhints' }, u.keys.map((k) => h('div', { 'data-key-state': k.state },
    h('code', {}, k.hint), k.state === 'disabled' ? h('span', { class: 'pill disabled', title: k.reason || '' }, t('ch_key_off') + (k.reason ? ' · ' + k.reason : '')) : null)));
}

async function showTest(u) {
  const r = await api('/admin/upstreams/' + encodeURIComponent(u.id ?? u.name) + '/test', { method: 'POST', body: {} });
  await modal(t('ch_test') + ' · ' + u.name, h('div', { id: 'test-result', 'data-ok': String(r.ok) },
    h('p', { class: r.ok ? 'ok' : 'warn' }, r.ok ? t('ch_test_ok') : t('ch_test_failed')),
    h('p', {}, t('col_model') + ': ', h('code', {}, r.model), ' · HTTP ', r.status === null ? '—' : String(r.status),
      ' · ', h('span', { id: 'test-latency' }, num(r.latencyMs) + ' ms')),
    r.error ? h('p', { class: 'warn err-text' }, r.error) : null,
    r.reply ? h('pre', { class: 'reply' }, r.reply) : null),
  [{ id: 'close', label: t('close'), primary: true }]);
}

// The add / edit form. Secrets are write-only: on edit, empty key and header boxes keep
// what is stored.
async function editChannel(u) {
  const f = {};
  const input = (id, value, attrs) => (f[id] = h('input', Object.assign({ id: 'ch-' + id, value: value ?? '' }, attrs || {})));
  const area = (id, value, attrs) => (f[id] = h('textarea', Object.assign({ id: 'ch-' + id, rows: 3 }, attrs || {}), value ?? ''));
  const label = (text, el) => h('label', {}, text, el);
  const protos = PROTOCOLS.map((p) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', value: p, 'data-proto': p, checked: u ? u.protocols.includes(p) : p === 'chat' }), p));
  const fetchMsg = h('span', { class: 'muted small', id: 'ch-fetch-msg' });
  const fetchBtn = u ? h('button', { type: 'button', id: 'ch-fetch-models', onclick: async () => {
    try {
      const r = await api('/admin/upstreams/' + u.id + '/models');
      f.models.value = r.models.join(', ');
      fetchMsg.textContent = t('ch_fetched').replace('{n}', r.models.length);
    } catch (e) { fetchMsg.textContent = t('error_prefix') + e.message; }
  } }, t('ch_fetch_models')) : null;
  const msg = h('p', { class: 'msg', id: 'ch-msg', role: 'alert' });
  const body = h('div', { class: 'form-grid channel-form' },
    label(t('name'), input('name', u && u.name, { maxlength: 64 })),
    label('Base URL', input('baseUrl', u && u.baseUrl, { placeholder: 'https://api.deepseek.com/v1', size: 40 })),
    h('div', { class: 'wide' }, h('span', { class: 'lbl' }, t('ch_protocols')), protos),
    h('label', { class: 'wide' }, t('ch_api_keys') + (u && u.keyHints.length ? ' (' + t('ch_keep_blank') + ': ' + u.keyHints.join(', ') + ')' : ''),
      area('apiKeys', '', { placeholder: t('ch_one_per_line'), autocomplete: 'off', spellcheck: 'false' })),
    h('label', { class: 'wide' }, t('ch_models'), input('models', u ? u.models.join(', ') : '*', { placeholder: 'deepseek-*, gpt-4o' }), fetchBtn, fetchMsg),
    h('label', { class: 'wide' }, t('ch_model_map'), area('modelMap', u ? Object.entries(u.modelMap).map(([a, b]) => a + '=' + b).join('\n') : '', { placeholder: 'gpt-4o=deepseek-chat' })),
    label(t('ch_priority'), input('priority', u ? u.priority : 0, { inputmode: 'numeric' })),
    label(t('ch_weight'), input('weight', u ? u.weight : 1, { inputmode: 'numeric' })),
    h('label', { class: 'wide' }, t('ch_headers') + (u && Object.keys(u.headers).length ? ' (' + t('ch_keep_blank') + ': ' + Object.keys(u.headers).join(', ') + ')' : ''),
      area('headers', '', { placeholder: 'X-Org: org-123', autocomplete: 'off', spellcheck: 'false' })),
    label(t('ch_timeout'), input('timeoutMs', u ? u.timeoutMs : 120000, { inputmode: 'numeric' })),
    label(t('ch_connect_timeout'), input('connectTimeoutMs', u ? u.connectTimeoutMs : 5000, { inputmode: 'numeric' })),
    label(t('ch_eject_after'), input('ejectAfterFailures', u ? u.ejectAfterFailures : '', { inputmode: 'numeric' })),
    label(t('ch_eject_window'), input('ejectWindowMs', u ? u.ejectWindowMs : '', { inputmode: 'numeric' })),
    label(t('ch_eject_cooldown'), input('ejectCooldownMs', u ? u.ejectCooldownMs : '', { inputmode: 'numeric' })),
    label(t('ch_tags'), input('tags', u ? u.tags.join(', ') : '')),
    msg);
  const collect = () => {
    const b = {
      name: f.name.value.trim(),
      baseUrl: f.baseUrl.value.trim(),
      protocols: protos.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
      models: list(f.models.value),
      modelMap: pairs(f.modelMap.value, '='),
      tags: list(f.tags.value),
    };
    for (const k of ['priority', 'weight', 'timeoutMs', 'connectTimeoutMs', 'ejectAfterFailures', 'ejectWindowMs', 'ejectCooldownMs']) {
      const v = intOr(f[k].value);
      if (v !== undefined) b[k] = v;
    }
    if (f.apiKeys.value.trim() || !u) b.apiKeys = lines(f.apiKeys.value);
    if (f.headers.value.trim() || !u) b.headers = pairs(f.headers.value, ':');
    return b;
  };
  for (;;) {
    const go = await modal(u ? t('ch_edit') + ' · ' + u.name : t('ch_add'), body, [
      { id: 'cancel', label: t('cancel'), value: false }, { id: 'save', label: t('save'), primary: true, value: true }]);
    if (!go) return;
    try {
      if (u) await api('/admin/upstreams/' + u.id, { method: 'PATCH', body: collect() });
      else await api('/admin/upstreams', { method: 'POST', body: collect() });
      hooks.render();
      return;
    } catch (e) {
      if (e.status === 401) return;
      msg.textContent = t('error_prefix') + e.message;
    }
  }
}

async function act(what, u) {
  const path = '/admin/upstreams/' + u.id;
  try {
    if (what === 'test') return await showTest(u);
    if (what === 'edit') return await editChannel(u);
    if (what === 'delete') {
      const ok = await modal(t('delete') + ' · ' + u.name, h('p', { class: 'warn' }, t('ch_delete_warning')),
        [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('delete'), danger: true, value: true }]);
      if (!ok) return;
      await api(path, { method: 'DELETE' });
    } else {
      await api(path + '/' + what, { method: 'POST' });
    }
    hooks.render();
  } catch (e) {
    if (e.status !== 401) await modal(t('error_prefix'), h('p', { class: 'warn' }, e.message), [{ id: 'close', label: t('close'), primary: true }]);
  }
}

function actions(u) {
  const b = (what, label, cls) => h('button', { 'data-act': what, class: cls || '', onclick: () => act(what, u) }, label);
  if (u.source === 'config') return h('div', { class: 'actions' }, b('test', t('ch_test')), h('span', { class: 'muted small' }, t('ch_read_only')));
  return h('div', { class: 'actions' }, b('test', t('ch_test')), b('edit', t('edit_key')),
    u.enabled ? b('disable', t('disable')) : b('enable', t('enable')), b('delete', t('delete'), 'danger'));
}

export async function page(main, p, gen) {
  const box = h('div', { id: 'channels-table' });
  append(main, [
    h('div', { class: 'toolbar' },
      isAdmin() ? h('button', { type: 'button', class: 'primary', id: 'add-channel', onclick: () => editChannel(null) }, t('ch_add')) : null,
      h('button', { type: 'button', id: 'refresh-channels', onclick: () => hooks.render() }, t('refresh')),
      h('span', { class: 'muted small' }, t('ch_hint'))),
    card(t('nav_channels'), box),
  ]);
  const res = await api('/admin/upstreams');
  if (gen !== st.gen) return;
  clear(box);
  const cols = [
    { key: 'name', label: t('name'), render: (u) => h('div', { 'data-channel': u.name }, h('strong', {}, u.name),
      h('div', {}, h('code', { class: 'err-text small', title: u.baseUrl }, u.baseUrl || u.kind)),
      h('div', { class: 'muted small' }, (u.source === 'config' ? t('ch_from_config') : 'id ' + u.id) + (u.tags.length ? ' · ' + u.tags.join(', ') : ''))) },
    { key: 'state', label: t('status'), render: stateCell },
    { key: 'models', label: t('ch_models'), render: (u) => h('div', {},
      h('span', { class: 'err-text', title: u.models.join(', ') }, u.models.join(', ')),
      h('div', { class: 'muted small' }, u.protocols.join(' · ') + ' · ' + t('ch_priority_weight') + ' ' + u.priority + ' / ' + u.weight)) },
    { key: 'keys', label: t('ch_api_keys'), render: keysCell },
    { key: 'requests', label: t('ch_requests_hour'), num: true, render: (u) => h('div', {}, num(u.requests),
      h('div', { class: 'muted small' }, t('up_error_rate') + ' ' + (u.errorRate * 100).toFixed(1) + '%')) },
    { key: 'p50LatencyMs', label: 'p50 / p95 ms', num: true, render: (u) => num(u.p50LatencyMs) + ' / ' + num(u.p95LatencyMs) },
    { key: 'tokens', label: t('col_tokens') + ' / ' + t('col_cost'), num: true, render: (u) => h('div', {}, num(u.tokens), h('div', { class: 'muted small' }, money(u.cost))) },
  ];
  if (isAdmin()) cols.push({ key: 'actions', label: t('actions'), render: actions });
  append(box, [table(cols, res.upstreams, { cls: 'channels' })]);
}
