// DOM building blocks. Every value from the API goes in as text (textContent), never as
// HTML: names, models and IPs come from callers and from foreign databases.

import { num } from './format.js';
import { href } from './router.js';
import { t } from './state.js';

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, kids);
  return el;
}

export function append(el, kids) {
  for (const c of kids.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function banner(msg, kind) {
  const b = document.getElementById('banner');
  if (!b) return;
  clear(b);
  if (msg) append(b, [h('div', { class: 'banner ' + (kind || 'err'), role: 'alert' }, msg)]);
}

export function showError(e) {
  if (e && e.status === 401) return;
  if (e && e.status === 503) banner(t('source_down'));
  else banner(t('error_prefix') + (e && e.message ? e.message : String(e)));
}

// How much of a budget is used: a bar, red from 90 %; "unlimited" without a quota.
export function budgetBar(used, quota) {
  if (quota === null || quota === undefined) return h('p', { class: 'muted' }, t('unlimited'));
  const u = Number(used);
  const q = Number(quota);
  const pctUsed = q > 0 ? Math.min(100, (u / q) * 100) : 100;
  return h('div', { class: 'budget', title: pctUsed.toFixed(1) + '%' },
    h('div', { class: 'budget-fill' + (pctUsed >= 90 ? ' low' : ''), style: 'width:' + pctUsed.toFixed(1) + '%' }));
}

export function card(title, ...body) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...body);
}

// CSV of rows already on screen (views with no export endpoint).
export function csvButton(name, columns, rows) {
  return h('button', {
    class: 'btn', 'data-csv': name,
    onclick: () => {
      const esc = (v) => {
        let s = v === null || v === undefined ? '' : String(v);
        if (/^[=+\-@]/.test(s)) s = "'" + s;
        return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
      };
      const lines = [columns.map(esc).join(',')].concat(rows.map((r) => columns.map((c) => esc(r[c])).join(',')));
      const blob = new Blob(['\ufeff' + lines.join('\r\n') + '\r\n'], { type: 'text/csv;charset=utf-8' });
      const a = h('a', { href: URL.createObjectURL(blob), download: name + '.csv' });
      document.body.appendChild(a);
      a.click();
      a.remove();
    },
  }, t('export_csv'));
}

// A table; columns: [{key, label, render?, num?}]; sortable by clicking a header.
export function table(columns, rows, opts) {
  opts = opts || {};
  let sortKey = opts.sortKey || null;
  let desc = true;
  const tbody = h('tbody');
  const fill = () => {
    clear(tbody);
    const list = rows.slice();
    if (sortKey) {
      list.sort((a, b) => {
        const x = a[sortKey];
        const y = b[sortKey];
        const c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return desc ? -c : c;
      });
    }
    if (!list.length) {
      tbody.appendChild(h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, t('no_data'))));
    }
    list.forEach((r, i) => {
      tbody.appendChild(h('tr', { 'data-row': i },
        columns.map((c) => h('td', { class: c.num ? 'num' : '', 'data-col': c.key },
          c.render ? c.render(r, i) : (c.num ? num(r[c.key]) : (r[c.key] === null || r[c.key] === undefined ? '' : String(r[c.key])))))));
    });
  };
  const head = h('tr', {}, columns.map((c) => h('th', {
    class: (c.num ? 'num ' : '') + (opts.sortable ? 'sortable' : ''), 'data-col': c.key,
    onclick: opts.sortable ? () => {
      if (sortKey === c.key) desc = !desc; else { sortKey = c.key; desc = true; }
      fill();
    } : null,
  }, c.label)));
  fill();
  return h('div', { class: 'tablewrap' }, h('table', { class: 'data' + (opts.cls ? ' ' + opts.cls : '') }, h('thead', {}, head), tbody));
}

export function pager(total, limit, offset, onGo) {
  const a = total ? offset + 1 : 0;
  const b = Math.min(offset + limit, total);
  return h('div', { class: 'pager' },
    h('button', { disabled: offset <= 0, onclick: () => onGo(Math.max(0, offset - limit)) }, t('prev')),
    h('span', { class: 'pageinfo' }, t('page_of').replace('{a}', a).replace('{b}', b).replace('{n}', total)),
    h('button', { disabled: offset + limit >= total, onclick: () => onGo(offset + limit) }, t('next')));
}

export function modal(title, body, buttons) {
  return new Promise((resolve) => {
    const close = (v) => { back.remove(); resolve(v); };
    const back = h('div', { class: 'modal-back' },
      h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('h3', {}, title), body,
        h('div', { class: 'modal-buttons' }, buttons.map((b) => h('button', {
          class: b.primary ? 'primary' : (b.danger ? 'danger' : ''), 'data-action': b.id,
          onclick: () => close(b.value !== undefined ? (typeof b.value === 'function' ? b.value() : b.value) : b.id),
        }, b.label)))));
    document.body.appendChild(back);
  });
}

export function showSecret(title, keys) {
  const body = h('div', {},
    h('p', { class: 'warn' }, t('key_once')),
    keys.map((k) => {
      const btn = h('button', {
        class: 'copy',
        onclick: async () => {
          try { await navigator.clipboard.writeText(k); } catch (_) { /* clipboard unavailable */ }
          btn.textContent = t('copied');
        },
      }, t('copy'));
      return h('div', { class: 'secret' }, h('code', { class: 'fullkey' }, k), btn);
    }));
  return modal(title, body, [{ id: 'close', label: t('close'), primary: true }]);
}
