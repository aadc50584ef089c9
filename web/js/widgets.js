// Pieces several pages share: the range bar, CSV links, links to a subject.

import { qs } from './api.js';
import { append, h } from './dom.js';
import { fmtSlot } from './format.js';
import { PRESETS, SLOTS, autoSlot, fromLocalInput, href, keepRange, rangeOf, setParams, toLocalInput } from './router.js';
import { hooks, t } from './state.js';

export function rangeBar(p, opts) {
  opts = opts || {};
  const r = rangeOf(p);
  const bar = h('div', { class: 'toolbar', id: 'range-bar' });
  const presets = h('div', { class: 'seg' });
  for (const k of Object.keys(PRESETS)) {
    presets.appendChild(h('button', {
      class: r.preset === k ? 'on' : '', 'data-range': k,
      onclick: () => setParams({ range: k, from: '', to: '' }),
    }, k));
  }
  const from = h('input', { type: 'datetime-local', value: toLocalInput(r.start), 'aria-label': t('from') });
  const to = h('input', { type: 'datetime-local', value: toLocalInput(r.end), 'aria-label': t('to') });
  append(bar, [
    h('span', { class: 'lbl' }, t('range')), presets,
    h('span', { class: 'custom' + (r.preset ? '' : ' on') }, t('custom'), ' ', from, ' – ', to,
      h('button', {
        onclick: () => {
          const a = fromLocalInput(from.value);
          const b = fromLocalInput(to.value);
          if (a < b) setParams({ from: a, to: b, range: '' });
        },
      }, t('apply'))),
  ]);
  if (opts.slot) {
    const sel = h('select', { id: 'slot', onchange: (e) => setParams({ slot: e.target.value }) },
      h('option', { value: '' }, t('auto') + ' (' + fmtSlot(autoSlot(r.end - r.start)) + ')'),
      SLOTS.map((s) => h('option', { value: s, selected: String(s) === p.slot }, fmtSlot(s))));
    append(bar, [h('span', { class: 'lbl' }, t('granularity')), sel]);
  }
  append(bar, [
    h('label', { class: 'chk' }, h('input', {
      type: 'checkbox', id: 'auto-refresh', checked: p.refresh === '1',
      onchange: (e) => setParams({ refresh: e.target.checked ? '1' : '' }),
    }), ' ', t('auto_refresh')),
    h('button', { onclick: () => hooks.render() }, t('refresh')),
  ]);
  return bar;
}

export function csvLink(params) {
  return h('a', { class: 'btn', href: '/api/export/csv?' + qs(params), download: '', 'data-csv': params.query_type }, t('export_csv'));
}

export const DIMS = { user: ['user_id', 'username'], token: ['token_id', 'token_name'], model: [null, 'model_name'], channel: ['channel_id', 'channel_name'] };

export function subjectLink(kind, id, label) {
  if (id === null || id === undefined || id === '' || id === 0) return label === undefined ? '' : String(label);
  const params = Object.assign({ [kind]: id }, keepRange());
  return h('a', { href: href('subject', params), class: 'subject', 'data-subject': kind }, label === undefined || label === '' ? String(id) : String(label));
}
