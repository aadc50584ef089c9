// The gateway's request log.

import { api, qs } from './api.js';
import { append, card, h, pager, table } from './dom.js';
import { money, num, when } from './format.js';
import { fromLocalInput, href, setParams, toLocalInput } from './router.js';
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
    // Cut to the column's width; the whole text on hover.
    { key: 'error', label: t('col_error'), render: (r) => r.error ? h('span', { class: 'err-text', title: r.error }, r.error) : '' },
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

// The filters of the page and of its CSV, as the API takes them.
const FILTERS = ['key', 'user', 'model', 'upstream', 'endpoint', 'status', 'requestId', 'start_ms', 'end_ms'];

function filtersOf(p) {
  const out = {};
  for (const k of FILTERS) out[k] = p[k] || '';
  return out;
}

export async function page(main, p, gen) {
  const limit = 100;
  const offset = +p.offset || 0;
  const input = (id, name, placeholder, size) =>
    h('input', { id, name, value: p[name] || '', placeholder, 'aria-label': placeholder, size });
  const key = input('req-key', 'key', t('filter_key'), 20);
  const user = input('req-user', 'user', t('filter_user'), 12);
  const model = input('req-model', 'model', t('filter_model'), 14);
  const upstream = input('req-upstream', 'upstream', t('filter_upstream'), 12);
  const requestId = input('req-id', 'requestId', t('filter_request_id'), 22);
  const endpoint = h('select', { id: 'req-endpoint', 'aria-label': t('col_endpoint') },
    [['', t('filter_endpoint_all')], ['chat.completions', 'chat.completions'], ['completions', 'completions'], ['embeddings', 'embeddings'], ['messages', 'messages'], ['responses', 'responses']]
      .map(([v, l]) => h('option', { value: v, selected: v === (p.endpoint || '') }, l)));
  const status = h('select', { id: 'req-status', 'aria-label': t('filter_status') },
    [['', t('st_all')], ['2xx', '2xx'], ['4xx', '4xx'], ['5xx', '5xx'], ['ok', t('status_ok')], ['error', t('status_error')]]
      .map(([v, l]) => h('option', { value: v, selected: v === (p.status || '') }, l)));
  const from = h('input', { id: 'req-from', type: 'datetime-local', 'aria-label': t('from'), value: p.start_ms ? toLocalInput(+p.start_ms) : '' });
  const to = h('input', { id: 'req-to', type: 'datetime-local', 'aria-label': t('to'), value: p.end_ms ? toLocalInput(+p.end_ms) : '' });
  const ms = (el) => (el.value ? String(fromLocalInput(el.value)) : '');
  const list = h('div', { id: 'requests-table' });
  append(main, [
    h('form', { class: 'toolbar wrap', id: 'req-filters', onsubmit: (e) => {
      e.preventDefault();
      setParams({ key: key.value.trim(), user: user.value.trim(), model: model.value.trim(), upstream: upstream.value.trim(),
        endpoint: endpoint.value, status: status.value, requestId: requestId.value.trim(), start_ms: ms(from), end_ms: ms(to), offset: '' });
    } },
    key, user, model, upstream, endpoint, status, requestId,
    h('span', { class: 'lbl' }, t('from')), from, h('span', { class: 'lbl' }, t('to')), to,
    h('button', { type: 'submit' }, t('apply'))),
    card(null, list),
  ]);
  const filters = filtersOf(p);
  const res = await api('/admin/requests?' + qs(Object.assign({ limit, offset }, filters)));
  if (gen !== st.gen) return;
  append(list, [
    h('div', { class: 'card-tools' },
      h('span', { class: 'muted', id: 'req-total' }, t('rows_total').replace('{n}', num(res.total))),
      h('a', { class: 'btn', id: 'req-csv', href: '/admin/requests/export.csv?' + qs(filters), download: 'requests.csv' }, t('export_csv_all'))),
    table(requestColumns(), res.requests),
    pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
  ]);
}
