// Invite codes: make one (the code shown once, with the /me link to redeem it), see how
// often each was used and by whom, revoke.

import { api } from './api.js';
import { append, card, h, modal, showSecret, table } from './dom.js';
import { money, num, when } from './format.js';
import { intOrNull, listOrNull } from './page-keys.js';
import { hooks, isAdmin, st, t } from './state.js';

async function createInvite() {
  const f = {};
  const field = (id, label, attrs) => {
    f[id] = h('input', Object.assign({ id: 'inv-' + id }, attrs || {}));
    return h('label', {}, label, f[id]);
  };
  const msg = h('p', { class: 'msg', id: 'inv-msg', role: 'alert' });
  const body = h('div', { class: 'form-grid' },
    field('quota', t('quota'), { inputmode: 'decimal' }),
    field('uses', t('inv_uses'), { inputmode: 'numeric', value: '1' }),
    field('expiresAt', t('expires_at') + ' (YYYY-MM-DD)'),
    field('validUntil', t('inv_valid_until') + ' (YYYY-MM-DD)'),
    field('models', t('col_model') + ' (a, b*)'),
    field('userId', t('owner_id'), { inputmode: 'numeric' }),
    field('teamId', t('inv_team_id'), { inputmode: 'numeric' }),
    field('prefix', t('prefix')),
    field('name', t('name')),
    msg);
  for (;;) {
    const go = await modal(t('inv_create'), body, [
      { id: 'cancel', label: t('cancel'), value: false }, { id: 'create', label: t('create'), primary: true, value: true }]);
    if (!go) return;
    const v = (k) => f[k].value.trim();
    const req = {};
    if (v('quota')) req.quota = intOrNull(v('quota'));
    if (v('uses')) req.uses = intOrNull(v('uses'));
    for (const k of ['expiresAt', 'validUntil', 'prefix', 'name']) if (v(k)) req[k] = v(k);
    if (listOrNull(v('models'))) req.models = listOrNull(v('models'));
    if (v('userId')) req.userId = intOrNull(v('userId'));
    if (v('teamId')) req.teamId = intOrNull(v('teamId'));
    try {
      const r = await api('/admin/invites', { method: 'POST', body: req });
      await showSecret(t('inv_create') + ' · ' + t('inv_redeem_at') + ' ' + location.origin + '/me', [r.code]);
      hooks.render();
      return;
    } catch (e) {
      if (e.status === 401) return;
      msg.textContent = t('error_prefix') + e.message;
    }
  }
}

async function showInvite(i) {
  const r = await api('/admin/invites/' + i.id);
  await modal(t('inv_redemptions') + ' · ' + i.hint, h('div', { id: 'inv-redemptions' }, table([
    { key: 'at', label: t('col_time'), render: (x) => when(x.at) },
    { key: 'key', label: t('col_key'), render: (x) => h('code', {}, x.key || '') },
    { key: 'keyId', label: t('col_id'), num: true },
    { key: 'clientIp', label: t('col_ip') },
  ], r.redemptions)), [{ id: 'close', label: t('close'), primary: true }]);
}

export async function page(main, p, gen) {
  const box = h('div', { id: 'invites-table' });
  append(main, [
    h('div', { class: 'toolbar' },
      isAdmin() ? h('button', { type: 'button', class: 'primary', id: 'create-invite', onclick: createInvite }, t('inv_create')) : null,
      h('span', { class: 'muted small' }, t('inv_hint').replace('{url}', location.origin + '/me'))),
    card(t('nav_invites'), box),
  ]);
  const res = await api('/admin/invites');
  if (gen !== st.gen) return;
  const cols = [
    { key: 'hint', label: t('inv_code'), render: (i) => h('code', {}, i.hint) },
    { key: 'quota', label: t('quota'), num: true, render: (i) => (i.quota === null ? t('unlimited') : money(i.quota)) },
    { key: 'used', label: t('inv_uses'), num: true, render: (i) => num(i.used) + ' / ' + num(i.uses) },
    { key: 'validUntil', label: t('inv_valid_until'), render: (i) => when(i.validUntil) },
    { key: 'expiresAt', label: t('expires_at'), render: (i) => when(i.expiresAt) },
    { key: 'createdAt', label: t('created_at'), render: (i) => when(i.createdAt) },
    { key: 'actions', label: t('actions'), render: (i) => h('div', { class: 'actions' },
      h('button', { 'data-act': 'show', onclick: () => showInvite(i) }, t('inv_redemptions')),
      isAdmin() ? h('button', { 'data-act': 'delete', class: 'danger', onclick: async () => {
        const ok = await modal(t('delete') + ' · ' + i.hint, h('p', {}, t('inv_delete_warning')),
          [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('delete'), danger: true, value: true }]);
        if (ok) { await api('/admin/invites/' + i.id, { method: 'DELETE' }); hooks.render(); }
      } }, t('delete')) : null) },
  ];
  append(box, [table(cols, res.invites, { cls: 'invites' })]);
}
