// Rankings by user, key, model or channel.

import { api, qs } from './api.js';
import { chart } from './charts.js';
import { append, card, h, table } from './dom.js';
import { num, quota, quotaValue } from './format.js';
import { rangeParams, setParams } from './router.js';
import { st, t } from './state.js';
import { DIMS, csvLink, rangeBar, subjectLink } from './widgets.js';

export async function page(main, p, gen) {
  const by = DIMS[p.by] ? p.by : 'user';
  const metric = ['tokens', 'reqs', 'quota_sum'].includes(p.metric) ? p.metric : 'tokens';
  const limit = p.limit || '50';
  const rp = rangeParams(p);
  const params = Object.assign({ by, metric, limit }, rp);
  const chartEl = h('div', { class: 'chart', id: 'rank-chart' });
  const tbl = h('div', { id: 'rank-table' });
  append(main, [
    rangeBar(p),
    h('div', { class: 'toolbar' },
      h('span', { class: 'lbl' }, t('dimension')),
      h('select', { id: 'by', onchange: (e) => setParams({ by: e.target.value }) },
        Object.keys(DIMS).map((d) => h('option', { value: d, selected: d === by }, t('by_' + d)))),
      h('span', { class: 'lbl' }, t('metric')),
      h('select', { id: 'metric', onchange: (e) => setParams({ metric: e.target.value }) },
        ['tokens', 'reqs', 'quota_sum'].map((m) => h('option', { value: m, selected: m === metric }, t('m_' + m)))),
      h('span', { class: 'lbl' }, t('limit')),
      h('select', { id: 'limit', onchange: (e) => setParams({ limit: e.target.value }) },
        ['10', '20', '50', '100', '500'].map((n) => h('option', { value: n, selected: n === limit }, n))),
      csvLink(Object.assign({ query_type: 'top' }, params))),
    card(null, chartEl),
    card(null, tbl),
  ]);
  const res = await api('/api/stats/top?' + qs(params));
  if (gen !== st.gen) return;
  const [idKey, nameKey] = DIMS[by];
  const labelOf = (r) => String(r[nameKey] || (idKey ? r[idKey] : ''));
  const top = res.data.slice(0, 20).reverse();
  // Tall enough for a label on every bar (ECharts drops every other one when crowded).
  chartEl.style.height = Math.max(240, top.length * 26 + 50) + 'px';
  chart(chartEl, {
    animation: false,
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    grid: { left: 140, right: 30, top: 10, bottom: 30 },
    xAxis: { type: 'value' },
    yAxis: { type: 'category', data: top.map(labelOf), axisLabel: { width: 120, overflow: 'truncate', interval: 0 } },
    series: [{ type: 'bar', name: t('m_' + metric), data: top.map((r) => (metric === 'quota_sum' ? quotaValue(r[metric]) : r[metric])) }],
  });
  const cols = [{ key: 'rank', label: t('col_rank'), num: true, render: (r) => String(r.rank) }];
  const rows = res.data.map((r, i) => Object.assign({ rank: i + 1 }, r));
  if (by === 'user') cols.push({ key: 'user_id', label: t('col_id'), num: true }, { key: 'username', label: t('col_user'), render: (r) => subjectLink('user_id', r.user_id, r.username || r.user_id) });
  if (by === 'token') cols.push({ key: 'token_id', label: t('col_id'), num: true }, { key: 'token_name', label: t('col_key'), render: (r) => subjectLink('token_id', r.token_id, r.token_name || r.token_id) });
  if (by === 'model') cols.push({ key: 'model_name', label: t('col_model') });
  if (by === 'channel') cols.push({ key: 'channel_id', label: t('col_id'), num: true }, { key: 'channel_name', label: t('col_channel') });
  cols.push({ key: 'tokens', label: t('col_tokens'), num: true }, { key: 'reqs', label: t('col_reqs'), num: true }, { key: 'quota_sum', label: t('col_quota'), num: true, render: (r) => quota(r.quota_sum) });
  append(tbl, [table(cols, rows, { sortable: true, cls: 'ranking' })]);
}
