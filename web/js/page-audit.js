// The audit log: every admin write, newest first, filtered by action, target and time.

import { api, qs } from './api.js';
import { append, card, h, pager, table } from './dom.js';
import { num, when } from './format.js';
import { fromLocalInput, href, setParams, toLocalInput } from './router.js';
import { st, t } from './state.js';

const ACTIONS = ['key.', 'key.create', 'key.update', 'key.reset', 'key.disable', 'key.enable', 'key.rotate', 'key.delete'];

export async function page(main, p, gen) {
  const limit = 100;
  const offset = +p.offset || 0;
  const action = h('select', { id: 'audit-action', 'aria-label': t('col_action') },
    [['', t('audit_all_actions')]].concat(ACTIONS.map((a) => [a, a === 'key.' ? t('audit_key_actions') : a]))
      .map(([v, l]) => h('option', { value: v, selected: v === (p.action || '') }, l)));
  const target = h('input', { id: 'audit-target', value: p.target || '', placeholder: t('col_target'), 'aria-label': t('col_target'), size: 12 });
  const from = h('input', { id: 'audit-from', type: 'datetime-local', 'aria-label': t('from'), value: p.start_ms ? toLocalInput(+p.start_ms) : '' });
  const to = h('input', { id: 'audit-to', type: 'datetime-local', 'aria-label': t('to'), value: p.end_ms ? toLocalInput(+p.end_ms) : '' });
  const ms = (el) => (el.value ? String(fromLocalInput(el.value)) : '');
  const list = h('div', { id: 'audit-table' });
  append(main, [
    h('form', { class: 'toolbar', id: 'audit-filters', onsubmit: (e) => {
      e.preventDefault();
      setParams({ action: action.value, target: target.value.trim(), start_ms: ms(from), end_ms: ms(to), offset: '' });
    } },
    action, target, h('span', { class: 'lbl' }, t('from')), from, h('span', { class: 'lbl' }, t('to')), to,
    h('button', { type: 'submit' }, t('apply'))),
    card(t('nav_audit'), list),
  ]);
  const filters = { action: p.action, target: p.target, start_ms: p.start_ms, end_ms: p.end_ms };
  const res = await api('/admin/audit?' + qs(Object.assign({ limit, offset }, filters)));
  if (gen !== st.gen) return;
  const details = (e) => {
    if (!e.details) return '';
    const text = JSON.stringify(e.details);
    return h('code', { class: 'err-text', title: text }, text);
  };
  append(list, [
    h('div', { class: 'card-tools' }, h('span', { class: 'muted', id: 'audit-total' }, t('rows_total').replace('{n}', num(res.total)))),
    table([
      { key: 'timestamp', label: t('col_time'), render: (e) => when(e.timestamp) },
      { key: 'action', label: t('col_action'), render: (e) => h('code', {}, e.action) },
      { key: 'target', label: t('col_target'), render: (e) => e.keyId ? h('a', { href: href('key', { id: e.keyId }) }, e.target || String(e.keyId)) : (e.target || '') },
      { key: 'tokenHint', label: t('col_actor') },
      { key: 'clientIp', label: t('col_ip') },
      { key: 'details', label: t('col_details'), render: details },
    ], res.entries),
    pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
  ]);
}
