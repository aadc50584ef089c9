// Users and teams: budgets shared by a user's keys (and by a team's users), search, a
// budget bar each, a user's keys and a team's users, 30 days of usage, create / edit /
// disable / delete.

import { api, qs } from './api.js';
import { chart } from './charts.js';
import { append, budgetBar, card, h, modal, table } from './dom.js';
import { money, when } from './format.js';
import { intOrNull } from './page-keys.js';
import { href, setParams } from './router.js';
import { hooks, isAdmin, st, t } from './state.js';

function budgetCell(a) {
  return h('div', { class: 'budget-cell' },
    a.quota === null ? null : budgetBar(a.used, a.quota),
    h('span', { class: 'muted small' }, money(a.used) + ' / ' + (a.quota === null ? t('unlimited') : money(a.quota))));
}

// The create / edit form of a user or a team; `a` is the account edited (null: a new one).
async function editAccount(kind, a) {
  const teams = kind === 'user' ? (await api('/admin/teams')).items : [];
  const f = {};
  const field = (name, label, attrs) => {
    f[name] = h('input', Object.assign({ name, id: 'acct-' + name }, attrs || {}));
    return h('label', {}, t(label), f[name]);
  };
  const lim = (a && a.limits) || {};
  f.refill_interval = h('select', { id: 'acct-refill_interval' },
    ['', 'daily', 'weekly', 'monthly'].map((v) => h('option', { value: v, selected: a && a.refill && a.refill.interval === v }, v ? t(v) : t('none'))));
  f.team = h('select', { id: 'acct-team' },
    [h('option', { value: '' }, t('none'))].concat(teams.map((x) => h('option', { value: String(x.id), selected: a && a.teamId === x.id }, x.name))));
  f.showKeys = h('input', { type: 'checkbox', id: 'acct-showKeys', checked: !!(a && a.showKeys) });
  const val = (v) => (v === null || v === undefined ? '' : String(v));
  const msg = h('p', { class: 'msg', id: 'acct-msg', role: 'alert' });
  const body = h('div', { class: 'form-grid' },
    field('name', 'name', { value: a ? a.name : '' }),
    kind === 'user' ? field('contact', 'contact', { value: a ? val(a.contact) : '' }) : null,
    field('quota', 'budget', { inputmode: 'decimal', placeholder: t('unlimited'), value: a ? val(a.quota) : '' }),
    h('label', {}, t('refill_interval'), f.refill_interval),
    field('refillAmount', 'refill_amount', { inputmode: 'numeric', value: a && a.refill ? val(a.refill.amount) : '' }),
    kind === 'user' ? h('label', {}, t('team'), f.team) : null,
    field('rpm', 'rpm', { inputmode: 'numeric', value: val(lim.rpm) }),
    field('tpm', 'tpm', { inputmode: 'numeric', value: val(lim.tpm) }),
    field('dailyRequests', 'daily_requests', { inputmode: 'numeric', value: val(lim.dailyRequests) }),
    field('maxConcurrent', 'max_concurrent', { inputmode: 'numeric', value: val(lim.maxConcurrent) }),
    kind === 'user' ? h('label', { class: 'check' }, f.showKeys, t('show_keys')) : null,
    msg);
  const v = (n) => f[n].value.trim();
  const request = () => {
    const req = { name: v('name') };
    if (kind === 'user') {
      req.contact = v('contact') || null;
      req.teamId = f.team.value ? Number(f.team.value) : null;
      req.showKeys = f.showKeys.checked;
    }
    req.quota = v('quota') ? intOrNull(v('quota')) : null;
    req.refill = f.refill_interval.value ? { interval: f.refill_interval.value, amount: intOrNull(v('refillAmount')) || 0 } : null;
    const limits = {};
    for (const k of ['rpm', 'tpm', 'dailyRequests', 'maxConcurrent']) if (v(k)) limits[k] = intOrNull(v(k));
    req.limits = limits;
    if (!a) {
      // A new record leaves out what is empty (`null` is for clearing on edit).
      for (const k of Object.keys(req)) if (req[k] === null) delete req[k];
    }
    return req;
  };
  const title = t(a ? (kind === 'user' ? 'user_edit' : 'team_edit') : (kind === 'user' ? 'user_create' : 'team_create'));
  for (;;) {
    const go = await modal(title, body, [
      { id: 'cancel', label: t('cancel'), value: false }, { id: 'save', label: a ? t('save') : t('create'), primary: true, value: true }]);
    if (!go) return;
    try {
      const path = '/admin/' + kind + 's' + (a ? '/' + a.id : '');
      await api(path, { method: a ? 'PATCH' : 'POST', body: request() });
      hooks.render();
      return;
    } catch (e) {
      if (e.status === 401) return;
      msg.textContent = t('error_prefix') + e.message;
    }
  }
}

async function setEnabled(kind, a, enabled) {
  await api('/admin/' + kind + 's/' + a.id, { method: 'PATCH', body: { enabled } });
  hooks.render();
}

async function remove(kind, a) {
  const ok = await modal(t('delete') + ' · ' + a.name, h('p', {}, t(kind + '_delete_warning')),
    [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('delete'), danger: true, value: true }]);
  if (!ok) return;
  try {
    await api('/admin/' + kind + 's/' + a.id, { method: 'DELETE' });
  } catch (e) {
    if (e.status !== 409) throw e;
  }
  hooks.render();
}

function actions(kind, a) {
  if (!isAdmin()) return null;
  return h('div', { class: 'actions' },
    h('button', { 'data-act': 'edit', onclick: () => editAccount(kind, a) }, t('edit_key')),
    a.enabled
      ? h('button', { 'data-act': 'disable', onclick: () => setEnabled(kind, a, false) }, t('disable'))
      : h('button', { 'data-act': 'enable', onclick: () => setEnabled(kind, a, true) }, t('enable')),
    h('button', { 'data-act': 'delete', class: 'danger', onclick: () => remove(kind, a) }, t('delete')));
}

// The queue of key holders' requests for more quota: pending first, then recent decisions.
async function decide(r, approve) {
  const note = h('input', { id: 'qr-note', maxlength: 500 });
  const amount = h('input', { id: 'qr-amount', inputmode: 'decimal', value: String(r.amount) });
  const body = h('div', { class: 'form-grid' },
    approve ? h('label', {}, t('qr_grant'), amount) : null,
    h('label', {}, t('qr_note'), note),
    h('p', { class: 'msg', id: 'qr-msg', role: 'alert' }));
  for (;;) {
    const go = await modal((approve ? t('qr_approve') : t('qr_deny')) + ' · ' + (r.keyName || r.key || r.keyId), body, [
      { id: 'cancel', label: t('cancel'), value: false },
      { id: approve ? 'approve' : 'deny', label: approve ? t('qr_approve') : t('qr_deny'), primary: approve, danger: !approve, value: true }]);
    if (!go) return;
    const req = {};
    if (note.value.trim()) req.note = note.value.trim();
    if (approve && amount.value.trim() && amount.value.trim() !== String(r.amount)) req.amount = intOrNull(amount.value.trim());
    try {
      await api('/admin/quota-requests/' + r.id + '/' + (approve ? 'approve' : 'deny'), { method: 'POST', body: req });
      hooks.render();
      return;
    } catch (e) {
      if (e.status === 401) return;
      body.querySelector('#qr-msg').textContent = t('error_prefix') + e.message;
    }
  }
}

function requestsTable(rows) {
  const sorted = rows.filter((r) => r.status === 'pending').concat(rows.filter((r) => r.status !== 'pending').slice(0, 10));
  if (!sorted.length) return h('p', { class: 'muted' }, t('qr_none'));
  return table([
    { key: 'createdAt', label: t('col_time'), render: (r) => when(r.createdAt) },
    { key: 'key', label: t('col_key'), render: (r) => h('span', {}, h('code', {}, r.key || String(r.keyId)), r.keyName ? ' · ' + r.keyName : '') },
    { key: 'userName', label: t('nav_users'), render: (r) => r.userName || '—' },
    { key: 'amount', label: t('amount'), num: true, render: (r) => money(r.amount) },
    { key: 'reason', label: t('reason'), render: (r) => r.reason || '—' },
    { key: 'status', label: t('status'), render: (r) => h('span', { class: 'pill qr-' + r.status, 'data-status': r.status }, t('qr_' + r.status) + (r.granted !== null && r.status === 'approved' ? ' +' + money(r.granted) : '')) },
    { key: 'actions', label: t('actions'), render: (r) => (r.status === 'pending' && isAdmin() ? h('div', { class: 'actions' },
      h('button', { 'data-act': 'approve', class: 'primary', onclick: () => decide(r, true) }, t('qr_approve')),
      h('button', { 'data-act': 'deny', onclick: () => decide(r, false) }, t('qr_deny'))) : (r.note || '')) },
  ], sorted, { cls: 'quota-requests' });
}

// One user or team: its budget, its keys (or users) and what they consumed a day.
async function detail(kind, id, box, gen) {
  const a = await api('/admin/' + kind + 's/' + id);
  if (gen !== st.gen) return;
  const chartBox = h('div', { class: 'chart', id: 'acct-chart' });
  const members = kind === 'user'
    ? table([
      { key: 'key', label: t('col_key'), render: (k) => h('a', { href: href('key', { id: k.id }), class: 'keylink' }, h('code', {}, k.key)) },
      { key: 'name', label: t('name') },
      { key: 'status', label: t('status'), render: (k) => h('span', { class: 'pill ' + k.status }, t('st_' + k.status)) },
      { key: 'used', label: t('used'), num: true, render: (k) => money(k.used) + ' / ' + (k.quota === null ? t('unlimited') : money(k.quota)) },
    ], a.keys || [], { cls: 'user-keys' })
    : table([
      { key: 'name', label: t('name'), render: (u) => h('a', { href: href('users', { user: u.id }) }, u.name) },
      { key: 'used', label: t('used'), num: true, render: (u) => money(u.used) + ' / ' + (u.quota === null ? t('unlimited') : money(u.quota)) },
      { key: 'enabled', label: t('status'), render: (u) => t(u.enabled ? 'st_active' : 'st_disabled') },
    ], a.users || [], { cls: 'team-users' });
  append(box, [card(a.name,
    h('dl', { class: 'props', id: 'acct-props' },
      h('dt', {}, t('status')), h('dd', {}, h('span', { class: 'pill ' + a.status }, t('st_' + a.status))),
      h('dt', {}, t('budget')), h('dd', {}, budgetCell(a)),
      h('dt', {}, t('remaining')), h('dd', { id: 'acct-remaining' }, a.remaining === null ? t('unlimited') : money(a.remaining)),
      a.teamName ? [h('dt', {}, t('team')), h('dd', {}, a.teamName)] : null,
      a.contact ? [h('dt', {}, t('contact')), h('dd', {}, a.contact)] : null,
      h('dt', {}, t('created_at')), h('dd', {}, when(a.createdAt))),
    actions(kind, a)),
  card(t(kind === 'user' ? 'user_keys' : 'team_users'), members),
  card(t('usage_30d'), chartBox)]);
  const days = a.usage || [];
  if (!days.length) return append(chartBox, [h('p', { class: 'muted' }, t('no_data'))]);
  chart(chartBox, {
    animation: false, tooltip: { trigger: 'axis' }, grid: { left: 50, right: 16, top: 16, bottom: 30 },
    xAxis: { type: 'category', data: days.map((d) => d.day) }, yAxis: { type: 'value' },
    series: [{ type: 'bar', name: t('used'), barMaxWidth: 40, data: days.map((d) => Number(d.amount)) }],
  });
}

export async function page(main, p, gen) {
  if (p.user || p.team) {
    const back = h('a', { href: href('users', {}), class: 'btn' }, '← ' + t('nav_users'));
    const box = h('div', { id: 'acct-detail' });
    append(main, [h('div', { class: 'toolbar' }, back), box]);
    return detail(p.user ? 'user' : 'team', p.user || p.team, box, gen);
  }
  const search = h('input', { id: 'user-search', value: p.q || '', placeholder: t('user_search'), size: 28 });
  const users = h('div', { id: 'users-table' });
  const teams = h('div', { id: 'teams-table' });
  const requests = h('div', { id: 'quota-requests' });
  append(main, [
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); setParams({ q: search.value.trim() }); } },
      search, h('button', { type: 'submit' }, t('apply')),
      isAdmin() ? h('button', { type: 'button', class: 'primary', id: 'create-user', onclick: () => editAccount('user', null) }, t('user_create')) : null,
      isAdmin() ? h('button', { type: 'button', id: 'create-team', onclick: () => editAccount('team', null) }, t('team_create')) : null,
      h('span', { class: 'muted small' }, t('users_hint'))),
    card(t('qr_title'), requests),
    card(t('users_title'), users),
    card(t('teams_title'), teams),
  ]);
  const [u, tm, qr] = await Promise.all([api('/admin/users?' + qs({ q: p.q })), api('/admin/teams?' + qs({ q: p.q })), api('/admin/quota-requests')]);
  if (gen !== st.gen) return;
  append(requests, [requestsTable(qr.requests)]);
  const nameLink = (kind) => (a) => h('a', { href: href('users', { [kind]: a.id }), class: kind + 'link' }, a.name);
  append(users, [table([
    { key: 'id', label: t('col_id'), num: true },
    { key: 'name', label: t('name'), render: nameLink('user') },
    { key: 'teamName', label: t('team'), render: (a) => a.teamName || '—' },
    { key: 'status', label: t('status'), render: (a) => h('span', { class: 'pill ' + a.status }, t('st_' + a.status)) },
    { key: 'used', label: t('budget'), render: budgetCell },
    { key: 'members', label: t('keys_count'), num: true },
    { key: 'actions', label: t('actions'), render: (a) => actions('user', a) },
  ], u.items, { cls: 'users' })]);
  append(teams, [table([
    { key: 'id', label: t('col_id'), num: true },
    { key: 'name', label: t('name'), render: nameLink('team') },
    { key: 'status', label: t('status'), render: (a) => h('span', { class: 'pill ' + a.status }, t('st_' + a.status)) },
    { key: 'used', label: t('budget'), render: budgetCell },
    { key: 'members', label: t('members'), num: true },
    { key: 'actions', label: t('actions'), render: (a) => actions('team', a) },
  ], tm.items, { cls: 'teams' })]);
}
