// The effective price table (read-only): billing mode, currency, every priced model and the
// time windows, with the one in force now.

import { api } from './api.js';
import { append, card, h, table } from './dom.js';
import { st, t } from './state.js';

export async function page(main, _p, gen) {
  const res = await api('/admin/prices');
  if (gen !== st.gen) return;
  const head = h('dl', { class: 'props', id: 'billing-mode' },
    h('dt', {}, t('billing_mode')), h('dd', {}, t('bm_' + res.mode)),
    h('dt', {}, t('currency')), h('dd', {}, res.currency));
  if (res.mode === 'requests') append(head, [h('dt', {}, t('request_cost')), h('dd', {}, String(res.requestCost))]);
  if (res.defaultsSource) append(head, [h('dt', {}, t('defaults_source')), h('dd', {}, res.defaultsSource)]);
  append(main, [card(t('nav_prices'), head)]);
  if (res.mode !== 'money') {
    append(main, [card(null, h('p', { class: 'hint' }, t('prices_not_money')))]);
    return;
  }
  const priceCols = [
    { key: 'model', label: t('col_model'), render: (e) => h('code', {}, e.model) },
    { key: 'upstream', label: t('col_upstream'), render: (e) => e.upstream || t('any_upstream') },
    { key: 'input', label: t('price_input'), num: true },
    { key: 'cachedInput', label: t('price_cached'), num: true },
    { key: 'cacheWrite', label: t('price_cache_write'), num: true },
    { key: 'output', label: t('price_output'), num: true },
    { key: 'perRequest', label: t('price_per_request'), num: true },
    { key: 'source', label: t('price_source'), render: (e) => t('src_' + e.source) },
  ];
  append(main, [card(t('prices_per_1m') + ' (' + res.currency + ')', h('div', { id: 'prices-table' }, table(priceCols, res.prices)))]);
  const win = res.windows.map((w) => card(w.name + (w.active ? ' · ' + t('window_active') : ''),
    h('dl', { class: 'props' },
      h('dt', {}, t('time_zone')), h('dd', {}, w.tz),
      h('dt', {}, t('window_days')), h('dd', {}, w.days.length ? w.days.join(', ') : t('every_day')),
      h('dt', {}, t('window_hours')), h('dd', {}, w.hours.length ? w.hours.join(', ') : t('all_day')),
      h('dt', {}, t('window_holidays')), h('dd', {}, w.holidays.length ? w.holidays.join(', ') : '—'),
      h('dt', {}, t('window_adjust')), h('dd', {}, w.factor !== null ? '× ' + w.factor : t('window_own_prices'))),
    w.factor === null ? table(priceCols.slice(0, 7), w.prices) : null));
  append(main, [h('div', { id: 'price-windows' }, win.length ? win : card(t('windows'), h('p', { class: 'hint' }, t('no_windows'))))]);
}
