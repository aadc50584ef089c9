// Weekday × hour heatmap, as an HTML table (readable and testable).

import { api, qs } from './api.js';
import { append, card, csvButton, h } from './dom.js';
import { compact, num } from './format.js';
import { rangeParams, setParams } from './router.js';
import { st, t, tz } from './state.js';
import { rangeBar } from './widgets.js';

export async function page(main, p, gen) {
  const metric = ['reqs', 'tokens', 'users'].includes(p.metric) ? p.metric : 'reqs';
  const rp = rangeParams(Object.assign({ range: p.range || '7d' }, p));
  const grid = h('div', { id: 'heatmap' });
  append(main, [
    rangeBar(Object.assign({ range: p.range || (p.from ? '' : '7d') }, p)),
    h('div', { class: 'toolbar' },
      h('span', { class: 'lbl' }, t('metric')),
      h('select', { id: 'heat-metric', onchange: (e) => setParams({ metric: e.target.value }) },
        ['reqs', 'tokens', 'users'].map((m) => h('option', { value: m, selected: m === metric }, t('m_' + m)))),
      h('span', { class: 'lbl' }, t('time_zone') + ': ' + tz())),
    card(t('heat_title'), grid),
  ]);
  const res = await api('/api/stats/heatmap?' + qs(Object.assign({ metric, tz: tz() }, rp)));
  if (gen !== st.gen) return;
  const cells = {};
  let max = 0;
  for (const [hour, wd, v] of res.data) {
    cells[wd + ':' + hour] = v;
    if (v > max) max = v;
  }
  const names = t('weekday_names');
  const head = h('tr', {}, h('th', {}, ''), Array.from({ length: 24 }, (_, i) => h('th', {}, String(i))));
  const body = [];
  const rows = [];
  for (let wd = 0; wd < 7; wd++) {
    const tr = h('tr', {}, h('th', {}, names[wd]));
    const row = { weekday: names[wd] };
    for (let hr = 0; hr < 24; hr++) {
      const v = cells[wd + ':' + hr] || 0;
      row[hr] = v;
      const td = h('td', { class: 'cell', 'data-weekday': wd, 'data-hour': hr, 'data-value': v, title: names[wd] + ' ' + hr + t('hour') + ': ' + num(v) }, v ? compact(v) : '');
      const a = max ? v / max : 0;
      td.style.backgroundColor = 'rgba(37, 99, 235, ' + (0.06 + 0.94 * a).toFixed(3) + ')';
      if (a > 0.55) td.style.color = '#fff';
      tr.appendChild(td);
    }
    body.push(tr);
    rows.push(row);
  }
  append(grid, [
    h('div', { class: 'card-tools' }, csvButton('heatmap', ['weekday'].concat(Array.from({ length: 24 }, (_, i) => String(i))), rows)),
    h('div', { class: 'tablewrap' }, h('table', { class: 'heat' }, h('thead', {}, head), h('tbody', {}, body))),
  ]);
}
