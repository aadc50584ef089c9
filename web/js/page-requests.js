// The gateway's request log.

import { api, qs } from './api.js';
import { append, card, csvButton, h, pager, table } from './dom.js';
import { money, num, when } from './format.js';
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
    { key: 'promptTokens', label: t('col_tokens'), num: true, render: tokens },
    { key: 'cost', label: t('col_cost'), num: true, render: (r) => money(r.cost) },
    { key: 'latencyMs', label: t('col_latency'), num: true },
    { key: 'clientIp', label: t('col_ip') },
    { key: 'error', label: t('col_error') },
  ];
}

// Prompt + completion, with the billing classes inside them when there are any (cache hits,
// cache writes, reasoning), the title spelling out every class.
function tokens(r) {
  const inner = [];
  if (r.cachedTokens) inner.push(t('tok_cached') + ' ' + num(r.cachedTokens));
  if (r.cacheWriteTokens) inner.push(t('tok_cache_write') + ' ' + num(r.cacheWriteTokens));
  if (r.reasoningTokens) inner.push(t('tok_reasoning') + ' ' + num(r.reasoningTokens));
  const text = num(r.promptTokens) + ' + ' + num(r.completionTokens) + (r.estimated ? ' ≈' : '');
  return h('span', { title: [t('tok_prompt') + ' ' + r.promptTokens, t('tok_cached') + ' ' + (r.cachedTokens || 0),
    t('tok_cache_write') + ' ' + (r.cacheWriteTokens || 0), t('tok_completion') + ' ' + r.completionTokens,
    t('tok_reasoning') + ' ' + (r.reasoningTokens || 0)].join('\n') },
  text, inner.length ? h('small', { class: 'classes' }, ' (' + inner.join(', ') + ')') : null);
}

export const REQUEST_CSV = ['timestamp', 'requestId', 'keyId', 'keyName', 'ownerUserId', 'ownerUsername', 'endpoint', 'model', 'upstream', 'promptTokens', 'cachedTokens', 'cacheWriteTokens', 'completionTokens', 'reasoningTokens', 'estimated', 'cost', 'status', 'error', 'latencyMs', 'ttftMs', 'isStream', 'clientIp'];

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
