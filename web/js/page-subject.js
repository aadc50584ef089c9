// One key, user or IP: its trend and latest requests.

import { api, qs } from './api.js';
import { chart, lineOption } from './charts.js';
import { append, card, csvButton, h, table } from './dom.js';
import { num, when, quota } from './format.js';
import { go, href, keepRange, rangeParams } from './router.js';
import { hasKeys, st, t } from './state.js';
import { rangeBar, subjectLink } from './widgets.js';

export async function page(main, p, gen) {
  const kind = ['token_id', 'user_id', 'ip'].find((k) => p[k]);
  if (!kind) { go('anomalies', keepRange()); return; }
  const rp = rangeParams(p);
  const q = Object.assign({ [kind]: p[kind] }, rp);
  const chartEl = h('div', { class: 'chart', id: 'subject-chart' });
  const tbl = h('div', { id: 'subject-requests' });
  const title = { token_id: t('col_key'), user_id: t('col_user'), ip: t('col_ip') }[kind] + ' ' + p[kind];
  append(main, [
    h('h1', { class: 'page-title' }, t('subject_title') + ' · ', title,
      kind === 'token_id' && hasKeys() ? h('a', { class: 'btn', href: href('key', { id: p[kind] }) }, t('view_key')) : null),
    rangeBar(p),
    card(t('trend'), chartEl),
    card(t('recent_requests'), tbl),
  ]);
  const res = await api('/api/stats/subject?' + qs(q));
  if (gen !== st.gen) return;
  chart(chartEl, lineOption(res.series, ['reqs', 'tokens', 'quota_sum']));
  const cols = [
    { key: 'created_at', label: t('col_time'), render: (r) => when(r.created_at) },
    { key: 'token_name', label: t('col_key'), render: (r) => subjectLink('token_id', r.token_id, r.token_name || r.token_id) },
    { key: 'username', label: t('col_user'), render: (r) => subjectLink('user_id', r.user_id, r.username || r.user_id) },
    { key: 'model_name', label: t('col_model') },
    { key: 'tokens', label: t('col_tokens'), num: true },
    { key: 'quota_sum', label: t('col_quota'), num: true, render: (r) => quota(r.quota_sum) },
    { key: 'ip', label: t('col_ip'), render: (r) => subjectLink('ip', r.ip) },
  ];
  append(tbl, [
    h('div', { class: 'card-tools' }, h('span', {}, t('total') + ' ' + num(res.total_count)),
      csvButton('requests', ['created_at', 'token_id', 'token_name', 'user_id', 'username', 'model_name', 'tokens', 'quota_sum', 'ip'], res.requests)),
    table(cols, res.requests, { sortable: true })]);
}
