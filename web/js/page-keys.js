// Keys: list, search, create, and the actions on one key.

import { api, qs } from './api.js';
import { append, card, csvButton, h, modal, pager, showError, showSecret, table } from './dom.js';
import { money, when } from './format.js';
import { href, setParams } from './router.js';
import { hooks, isAdmin, quotaIsMoney, st, t } from './state.js';

export function intOrNull(v) {
  v = String(v || '').trim();
  if (!v) return null;
  const n = Number(v);
  return Number.isInteger(n) ? n : v; // the API names the field when it is not a number
}

export function listOrNull(v) {
  const l = String(v || '').split(',').map((s) => s.trim()).filter(Boolean);
  return l.length ? l : null;
}

export async function keyAction(action, k) {
  try {
    if (action === 'disable' || action === 'enable') {
      await api('/admin/keys/' + action, { method: 'POST', body: { key: String(k.id) } });
    } else if (action === 'quota') {
      if (!(await adjustQuota(k))) return;
    } else if (action === 'edit') {
      if (!(await editKey(k))) return;
    } else if (action === 'reset') {
      const input = h('input', { id: 'new-quota', inputmode: 'decimal', value: k.quota === null ? '' : k.quota });
      const v = await modal(t('reset') + ' ' + k.key, h('div', {},
        h('p', { class: 'warn', id: 'reset-warning' }, t('reset_warning')),
        h('label', {}, t('new_quota'), input)),
        [{ id: 'cancel', label: t('cancel'), value: null }, { id: 'confirm', label: t('confirm'), primary: true, value: () => input.value }]);
      if (v === null) return;
      const body = { key: String(k.id) };
      if (String(v).trim() !== '') body.newQuota = intOrNull(v);
      await api('/admin/keys/reset', { method: 'POST', body });
    } else if (action === 'rotate') {
      const ok = await modal(t('rotate'), h('p', {}, t('confirm_rotate') + ' ', h('b', {}, k.key), '?'),
        [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('rotate'), danger: true, value: true }]);
      if (!ok) return;
      const r = await api('/admin/keys/' + k.id + '/rotate', { method: 'POST' });
      await showSecret(t('rotate'), [r.key]);
    } else if (action === 'delete') {
      const ok = await modal(t('delete'), h('p', {}, t('confirm_delete') + ' ', h('b', {}, k.key), '?'),
        [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('delete'), danger: true, value: true }]);
      if (!ok) return;
      await api('/admin/keys/' + k.id, { method: 'DELETE' });
    }
    hooks.render();
  } catch (e) {
    showError(e);
  }
}

// Raise or set the quota; `used` stays (a reset is the other button, and says so).
async function adjustQuota(k) {
  const mode = h('select', { id: 'quota-mode' },
    h('option', { value: 'add' }, t('quota_add')), h('option', { value: 'set' }, t('quota_set')));
  const amount = h('input', { id: 'quota-amount', inputmode: 'decimal' });
  const v = await modal(t('adjust_quota') + ' ' + k.key, h('div', {},
    h('p', { class: 'hint' }, t('quota_keeps_used').replace('{used}', money(k.used))),
    h('label', {}, t('quota_how'), mode), h('label', {}, t('amount'), amount)),
  [{ id: 'cancel', label: t('cancel'), value: null },
    { id: 'confirm', label: t('confirm'), primary: true, value: () => ({ mode: mode.value, amount: amount.value.trim() }) }]);
  if (!v) return false;
  let body;
  if (v.mode === 'set') {
    body = { quota: v.amount === '' ? null : intOrNull(v.amount) };
  } else {
    if (k.quota === null) throw new Error(t('quota_add_unlimited'));
    // Added by the server to the quota as it is then: two operators adding both count.
    body = { addQuota: intOrNull(v.amount) };
  }
  await api('/admin/keys/' + k.id, { method: 'PATCH', body });
  return true;
}

// Every field of a key but its quota and secret: name, expiry, owner, limits.
async function editKey(k) {
  const l = k.limits || {};
  const o = k.owner || {};
  const field = (id, label, value) => {
    const input = h('input', { id: 'edit-' + id, value: value === undefined || value === null ? '' : String(value) });
    return [input, h('label', {}, label, input)];
  };
  const [name, nameL] = field('name', t('name'), k.name);
  const [exp, expL] = field('expiresAt', t('expires_at') + ' (YYYY-MM-DD)', k.expiresAt ? k.expiresAt.slice(0, 10) : '');
  const [oid, oidL] = field('ownerId', t('owner_id'), o.userId);
  const [oname, onameL] = field('ownerName', t('owner_name'), o.username);
  const [rpm, rpmL] = field('rpm', t('rpm'), l.rpm);
  const [tpm, tpmL] = field('tpm', t('tpm'), l.tpm);
  const [daily, dailyL] = field('dailyRequests', t('daily_requests'), l.dailyRequests);
  const [conc, concL] = field('maxConcurrent', t('max_concurrent'), l.maxConcurrent);
  const [models, modelsL] = field('models', t('col_model') + ' (a, b*)', (l.models || []).join(', '));
  const [ips, ipsL] = field('ips', 'IP (10.0.0.0/8, …)', (l.ips || []).join(', '));
  const ok = await modal(t('edit_key') + ' ' + k.key, h('div', { class: 'form-grid' },
    nameL, expL, oidL, onameL, rpmL, tpmL, dailyL, concL, modelsL, ipsL),
  [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('save'), primary: true, value: true }]);
  if (!ok) return false;
  const limits = {};
  for (const [key, input] of [['rpm', rpm], ['tpm', tpm], ['dailyRequests', daily], ['maxConcurrent', conc]]) {
    const n = intOrNull(input.value);
    if (n !== null) limits[key] = n;
  }
  const ml = listOrNull(models.value);
  if (ml) limits.models = ml;
  const il = listOrNull(ips.value);
  if (il) limits.ips = il;
  const owner = oid.value.trim() || oname.value.trim()
    ? Object.assign({}, oid.value.trim() ? { userId: intOrNull(oid.value) } : {}, oname.value.trim() ? { username: oname.value.trim() } : {})
    : null;
  const body = { name: name.value.trim() || null, expiresAt: exp.value.trim() || null, owner, limits };
  await api('/admin/keys/' + k.id, { method: 'PATCH', body });
  return true;
}

export function keyActions(k) {
  if (!isAdmin()) return '';
  return h('div', { class: 'actions' },
    h('button', { 'data-act': 'quota', onclick: () => keyAction('quota', k) }, t('adjust_quota')),
    h('button', { 'data-act': 'edit', onclick: () => keyAction('edit', k) }, t('edit_key')),
    h('button', { 'data-act': k.enabled ? 'disable' : 'enable', onclick: () => keyAction(k.enabled ? 'disable' : 'enable', k) }, t(k.enabled ? 'disable' : 'enable')),
    h('button', { 'data-act': 'reset', onclick: () => keyAction('reset', k) }, t('reset')),
    h('button', { 'data-act': 'rotate', onclick: () => keyAction('rotate', k) }, t('rotate')),
    h('button', { 'data-act': 'delete', class: 'danger', onclick: () => keyAction('delete', k) }, t('delete')));
}

export async function createKey() {
  const f = {};
  const field = (name, label, attrs) => {
    f[name] = h('input', Object.assign({ name, id: 'new-' + name }, attrs || {}));
    return h('label', {}, t(label), f[name]);
  };
  f.refill_interval = h('select', { name: 'refill_interval', id: 'new-refill_interval' },
    ['', 'daily', 'weekly', 'monthly'].map((v) => h('option', { value: v }, v ? t(v) : t('none'))));
  const body = h('div', { class: 'form-grid' },
    field('name', 'name'), field('prefix', 'prefix', { placeholder: 'qp' }),
    field('quota', 'quota', { inputmode: 'decimal', placeholder: t('unlimited') }),
    field('expiresAt', 'expires_at', { type: 'date' }), field('count', 'count', { inputmode: 'numeric', value: '1' }),
    field('ownerId', 'owner_id', { inputmode: 'numeric' }), field('ownerName', 'owner_name'),
    field('dailyRequests', 'daily_requests', { inputmode: 'numeric' }), field('rpm', 'rpm', { inputmode: 'numeric' }),
    field('tpm', 'tpm', { inputmode: 'numeric' }), field('maxConcurrent', 'max_concurrent', { inputmode: 'numeric' }),
    field('models', 'models_allowed'), field('ips', 'ips_allowed'),
    h('label', {}, t('refill_interval'), f.refill_interval), field('refillAmount', 'refill_amount', { inputmode: 'numeric' }),
    h('p', { class: 'msg', id: 'create-msg', role: 'alert' }));
  const submit = async () => {
    const v = (n) => f[n].value.trim();
    const req = { count: intOrNull(v('count')) || 1 };
    if (v('name')) req.name = v('name');
    if (v('prefix')) req.prefix = v('prefix');
    if (v('quota')) req.quota = intOrNull(v('quota'));
    if (v('expiresAt')) req.expiresAt = v('expiresAt');
    if (v('ownerId') || v('ownerName')) {
      req.owner = {};
      if (v('ownerId')) req.owner.userId = intOrNull(v('ownerId'));
      if (v('ownerName')) req.owner.username = v('ownerName');
    }
    const limits = {};
    for (const k of ['dailyRequests', 'rpm', 'tpm', 'maxConcurrent']) if (v(k)) limits[k] = intOrNull(v(k));
    if (listOrNull(v('models'))) limits.models = listOrNull(v('models'));
    if (listOrNull(v('ips'))) limits.ips = listOrNull(v('ips'));
    if (Object.keys(limits).length) req.limits = limits;
    if (v('refill_interval')) req.refill = { interval: v('refill_interval'), amount: intOrNull(v('refillAmount')) || 0 };
    return api('/admin/keys', { method: 'POST', body: req });
  };
  // The dialog stays open until the key is created or the operator cancels.
  for (;;) {
    const go2 = await modal(t('create_key'), body, [
      { id: 'cancel', label: t('cancel'), value: false }, { id: 'create', label: t('create'), primary: true, value: true }]);
    if (!go2) return;
    try {
      const r = await submit();
      const keys = r.keys ? r.keys.map((k) => k.key) : [r.key];
      await showSecret(t('create_key'), keys);
      hooks.render();
      return;
    } catch (e) {
      if (e.status === 401) return;
      body.querySelector('#create-msg').textContent = t('error_prefix') + e.message;
    }
  }
}

export async function page(main, p, gen) {
  const limit = 50;
  const offset = +p.offset || 0;
  const search = h('input', { id: 'key-search', value: p.q || '', placeholder: t('search'), size: 28 });
  const status = h('select', { id: 'key-status', onchange: (e) => setParams({ status: e.target.value, offset: '' }) },
    ['', 'active', 'disabled', 'expired', 'exhausted'].map((s) => h('option', { value: s, selected: s === (p.status || '') }, t('st_' + (s || 'all')))));
  const list = h('div', { id: 'keys-table' });
  append(main, [
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); setParams({ q: search.value.trim(), offset: '' }); } },
      search, h('button', { type: 'submit' }, t('apply')), h('span', { class: 'lbl' }, t('status')), status,
      isAdmin() ? h('button', { type: 'button', class: 'primary', id: 'create-key', onclick: createKey }, t('create_key')) : null),
    card(null, list),
  ]);
  const res = await api('/admin/keys?' + qs({ status: p.status, q: p.q, limit, offset }));
  if (gen !== st.gen) return;
  const cols = [
    { key: 'id', label: t('col_id'), num: true },
    { key: 'name', label: t('name'), render: (k) => h('a', { href: href('key', { id: k.id }), class: 'keylink' }, k.name || '—') },
    { key: 'key', label: t('col_key'), render: (k) => h('code', {}, k.key) },
    { key: 'status', label: t('status'), render: (k) => h('span', { class: 'pill ' + k.status }, t('st_' + k.status)) },
    { key: 'quota', label: t('quota'), num: true, render: (k) => k.quota === null ? t('unlimited') : money(k.quota) },
    { key: 'used', label: t('used'), num: true, render: (k) => money(k.used) },
    { key: 'remaining', label: t('remaining'), num: true, render: (k) => k.remaining === null ? t('unlimited') : money(k.remaining) },
    { key: 'expiresAt', label: t('expires_at'), render: (k) => when(k.expiresAt) },
    { key: 'lastUsed', label: t('last_used'), render: (k) => when(k.lastUsed) },
  ];
  if (isAdmin()) cols.push({ key: 'actions', label: t('actions'), render: keyActions });
  append(list, [
    h('div', { class: 'card-tools' }, csvButton('keys', ['id', 'name', 'key', 'status', 'quota', 'used', 'remaining', 'expiresAt', 'createdAt', 'lastUsed'], res.keys)),
    table(cols, res.keys, { cls: 'keys' }),
    pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
  ]);
}
