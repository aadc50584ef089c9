// The gateway's request log.

import { api, qs } from './api.js';
import { append, card, csvButton, h, pager, table } from './dom.js';
import { num, when } from './format.js';
import { href, setParams } from './router.js';
import { st, t } from './state.js';

export function requestColumns() {
  return [
    { key: 'timestamp', label: t('col_time'), render: (r) => when(r.timestamp) },
    { key: 'keyName', label: t('col_key'), render: (r) => r.keyId ? h('a', { href: href('key', { id: r.keyId }) }, r.keyName || String(r.keyId)) : '' },
    { key: 'ownerUsername', label: t('col_user') },
    { key: 'endpoint', label: t('col_endpoint') },
    { key: 'model', label: t('col_model') },
    { key: 'upstream', label: t('col_upstream') },
    { key: 'status', label: t('col_status'), num: true },
    { key: 'promptTokens', label: t('col_tokens'), num: true, render: (r) => num(r.promptTokens) + ' + ' + num(r.completionTokens) },
    { key: 'cost', label: t('col_cost'), num: true },
    { key: 'latencyMs', label: t('col_latency'), num: true },
    { key: 'clientIp', label: t('col_ip') },
    { key: 'error', label: t('col_error') },
  ];
}

export const REQUEST_CSV = ['timestamp', 'requestId', 'keyId', 'keyName', 'ownerUserId', 'ownerUsername', 'endpoint', 'model', 'upstream', 'promptTokens', 'completionTokens', 'cost', 'status', 'error', 'latencyMs', 'ttftMs', 'isStream', 'clientIp'];

export async function page(main, p, gen) {
  const limit = 100;
  const offset = +p.offset || 0;
  const key = h('input', { id: 'req-key', value: p.key || '', placeholder: t('filter_key'), size: 20 });
  const model = h('input', { id: 'req-model', value: p.model || '', placeholder: t('filter_model'), size: 16 });
  const status = h('select', { id: 'req-status' },
    [['', t('st_all')], ['ok', t('status_ok')], ['error', t('status_error')]].map(([v, l]) => h('option', { value: v, selected: v === (p.status || '') }, l)));
  const list = h('div', { id: 'requests-table' });
  append(main, [
    h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); setParams({ key: key.value.trim(), model: model.value.trim(), status: status.value, offset: '' }); } },
      key, model, status, h('button', { type: 'submit' }, t('apply'))),
    card(null, list),
  ]);
  const res = await api('/admin/requests?' + qs({ key: p.key, model: p.model, status: p.status, limit, offset }));
  if (gen !== st.gen) return;
  append(list, [
    h('div', { class: 'card-tools' }, csvButton('requests', REQUEST_CSV, res.requests)),
    table(requestColumns(), res.requests),
    pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
  ]);
}
