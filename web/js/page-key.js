// One key: its properties, usage history and gateway requests.

import { api, qs } from './api.js';
import { append, card, csvButton, h, table } from './dom.js';
import { num, when, money } from './format.js';
import { keyActions } from './page-keys.js';
import { REQUEST_CSV, requestColumns } from './page-requests.js';
import { href } from './router.js';
import { st, t } from './state.js';

export function limitsText(l) {
  const parts = [];
  const names = { dailyRequests: 'daily_requests', rpm: 'rpm', tpm: 'tpm', maxConcurrent: 'max_concurrent' };
  for (const [k, label] of Object.entries(names)) if (l[k] !== undefined) parts.push(t(label) + ' ' + num(l[k]));
  if (l.models) parts.push(t('col_model') + ': ' + l.models.join(', '));
  if (l.ips) parts.push('IP: ' + l.ips.join(', '));
  return parts.length ? parts.join(' · ') : t('none');
}

// An operator's change reads as what changed (quota 30 → 50), not as its audit action.
function reasonOf(r) {
  const m = r.metadata || {};
  if (!m.admin) return r.reason || '';
  const show = (v) => (v === null || v === undefined ? t('unlimited') : money(v));
  const parts = [];
  if (m.quota) parts.push(t('quota') + ' ' + show(m.quota.from) + ' → ' + show(m.quota.to));
  if (m.used) parts.push(t('used') + ' ' + show(m.used.from) + ' → ' + show(m.used.to));
  return h('span', { class: 'admin-change', title: r.reason || '' }, parts.join(', ') || r.reason || '');
}

export async function page(main, p, gen) {
  const id = p.id;
  const head = h('div', { id: 'key-detail' });
  const hist = h('div', { id: 'key-history' });
  const reqs = h('div', { id: 'key-requests' });
  append(main, [card(t('key_detail') + ' #' + id, head), card(t('usage_history'), hist), card(t('gateway_requests'), reqs)]);
  const [k, hi, rq] = await Promise.all([
    api('/admin/keys/' + encodeURIComponent(id)),
    api('/admin/usage/history?' + qs({ key: id, limit: 100 })),
    api('/admin/requests?' + qs({ key: id, limit: 100 })),
  ]);
  if (gen !== st.gen) return;
  const rows = [
    [t('name'), k.name || '—'], [t('col_key'), h('code', {}, k.key)], [t('status'), t('st_' + k.status)],
    [t('quota'), k.quota === null ? t('unlimited') : money(k.quota)], [t('used'), money(k.used)],
    [t('remaining'), k.remaining === null ? t('unlimited') : money(k.remaining)],
    [t('expires_at'), when(k.expiresAt)], [t('created_at'), when(k.createdAt)], [t('last_used'), when(k.lastUsed)],
    [t('owner_name'), k.owner ? [k.owner.username || '', k.owner.userId !== undefined ? ' (' + k.owner.userId + ')' : ''].join('') : '—'],
    [t('limits'), limitsText(k.limits || {})],
    [t('refill_interval'), k.refill ? t(k.refill.interval) + ' → ' + num(k.refill.amount) : '—'],
  ];
  append(head, [
    h('dl', { class: 'props' }, rows.map(([a, b]) => [h('dt', {}, a), h('dd', {}, b)])),
    h('div', { class: 'toolbar' }, keyActions(k), h('a', { class: 'btn', href: href('subject', { token_id: k.id }) }, t('trend'))),
  ]);
  append(hist, [h('div', { class: 'card-tools' }, csvButton('key-' + id + '-history', ['timestamp', 'amount', 'reason', 'remaining'], hi.history)), table([
    { key: 'timestamp', label: t('col_time'), render: (r) => when(r.timestamp) },
    { key: 'amount', label: t('amount'), num: true, render: (r) => money(r.amount) },
    { key: 'reason', label: t('reason'), render: reasonOf },
    { key: 'remaining', label: t('remaining'), num: true, render: (r) => money(r.remaining) },
  ], hi.history)]);
  append(reqs, [
    h('div', { class: 'card-tools' }, csvButton('key-' + id + '-requests', REQUEST_CSV, rq.requests)),
    table(requestColumns(), rq.requests),
  ]);
}
