// Overview: KPIs, the trend, the upstreams.

import { api, qs } from './api.js';
import { chart, lineOption } from './charts.js';
import { append, card, csvButton, h, table } from './dom.js';
import { num, pct, usd, quota } from './format.js';
import { rangeParams } from './router.js';
import { hasKeys, st, t } from './state.js';
import { csvLink, rangeBar } from './widgets.js';

export async function page(main, p, gen) {
  const rp = rangeParams(p);
  const slot = p.slot || '';
  const kpis = h('div', { class: 'kpis', id: 'kpis' });
  const trend = h('div', { class: 'chart', id: 'trend-chart' });
  const metricsSel = ['reqs', 'tokens', 'quota_sum', 'users', 'tokens_cnt'];
  const ups = h('div', { id: 'upstreams' });
  append(main, [
    rangeBar(p, { slot: true }),
    kpis,
    card(t('trend'), h('div', { class: 'card-tools' }, csvLink(Object.assign({ query_type: 'series', slot_sec: slot }, rp))), trend),
    st.session.source === 'native' && hasKeys() ? card(t('upstreams'), ups) : null,
  ]);
  const [sum, series] = await Promise.all([
    api('/api/stats/summary?' + qs(rp)),
    api('/api/stats/series?' + qs(Object.assign({ slot_sec: slot }, rp))),
  ]);
  if (gen !== st.gen) return;
  const items = [
    ['reqs', 'kpi_reqs', num(sum.reqs)],
    ['tokens', 'kpi_tokens', num(sum.tokens)],
    ['quota_sum', 'kpi_quota', quota(sum.quota_sum), sum.quota_usd !== undefined && st.session.source !== 'native' ? usd(sum.quota_usd) : null],
    ['users', 'kpi_users', num(sum.users)],
    ['keys', 'kpi_keys', num(sum.keys)],
    ['models', 'kpi_models', num(sum.models)],
  ];
  if ('error_rate' in sum) items.push(['error_rate', 'kpi_error_rate', pct(sum.error_rate)]);
  if ('latency_p50_ms' in sum) items.push(['latency_p50_ms', 'kpi_p50', num(sum.latency_p50_ms) + ' ms']);
  if ('latency_p95_ms' in sum) items.push(['latency_p95_ms', 'kpi_p95', num(sum.latency_p95_ms) + ' ms']);
  // What each count is of, on hover (the error rate is over every call, the requests count
  // only the served ones).
  const hints = { reqs: t('kpi_reqs_hint'), error_rate: t('kpi_error_rate_hint') };
  append(kpis, items.map(([k, label, v, sub]) => h('div', { class: 'kpi', 'data-kpi': k, 'data-value': sum[k], title: hints[k] || null },
    h('div', { class: 'kpi-label' }, t(label)), h('div', { class: 'kpi-value' }, v), sub ? h('div', { class: 'kpi-sub' }, sub) : null)));
  chart(trend, lineOption(series.data, metricsSel));
  if (st.session.source === 'native' && hasKeys()) {
    const u = await api('/admin/upstreams?' + qs(rp));
    if (gen !== st.gen) return;
    append(ups, [h('div', { class: 'card-tools' }, csvButton('upstreams', ['name', 'kind', 'state', 'requests', 'errors', 'errorRate', 'avgLatencyMs', 'p95LatencyMs', 'avgTtftMs'], u.upstreams)), table([
      { key: 'name', label: t('up_name') },
      { key: 'kind', label: t('up_kind') },
      { key: 'state', label: t('up_state'), render: (r) => h('span', { class: 'pill ' + r.state }, t('up_' + r.state)) },
      { key: 'requests', label: t('up_requests'), num: true },
      { key: 'errorRate', label: t('up_error_rate'), num: true, render: (r) => pct(r.errorRate) },
      { key: 'avgLatencyMs', label: t('up_latency'), num: true, render: (r) => num(r.avgLatencyMs) + ' / ' + num(r.p95LatencyMs) + ' ms' },
      { key: 'avgTtftMs', label: t('up_ttft'), num: true, render: (r) => r.avgTtftMs === null ? '—' : num(r.avgTtftMs) + ' ms' },
    ], u.upstreams)]);
  }
}
