// quota-proxy dashboard. No framework, no build step: DOM nodes are made with h(), and
// every value that comes from the API is inserted as text (textContent), never as HTML,
// because names, models and IPs come from callers and from foreign databases.
'use strict';
(function () {
  const I18N = window.QP_I18N;
  const app = document.getElementById('app');

  // ---------- state ----------
  const st = {
    session: null, // {role, mode, source, tz}
    lang: localStorage.getItem('qp.lang') ||
      ((navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en'),
    tz: localStorage.getItem('qp.tz') || '',
    charts: [],
    timer: null,
    gen: 0, // bumps on every render: late answers of an old view are dropped
  };

  function t(k) {
    const d = I18N[st.lang] || I18N.zh;
    return k in d ? d[k] : k;
  }

  function tz() {
    return st.tz || (st.session && st.session.tz) || 'UTC';
  }

  // ---------- DOM ----------
  function h(tag, attrs, ...kids) {
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

  function append(el, kids) {
    for (const c of kids.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  // ---------- formatting ----------
  function locale() {
    return st.lang === 'zh' ? 'zh-CN' : 'en-US';
  }

  function num(v) {
    if (v === null || v === undefined || v === '') return '—';
    if (typeof v !== 'number') return String(v);
    return new Intl.NumberFormat(locale(), { maximumFractionDigits: 2 }).format(v);
  }

  function usd(v) {
    const digits = Math.abs(v) >= 1 || v === 0 ? 2 : 6;
    return new Intl.NumberFormat(locale(), { style: 'currency', currency: 'USD', maximumFractionDigits: digits }).format(v);
  }

  function pct(v) {
    if (v === null || v === undefined) return '—';
    return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 2 }).format(v);
  }

  function when(v) {
    if (!v) return '—';
    const d = typeof v === 'number' ? new Date(v) : new Date(v);
    if (isNaN(d.getTime())) return String(v);
    try {
      return new Intl.DateTimeFormat(locale(), {
        timeZone: tz(), year: 'numeric', month: '2-digit', day: '2-digit',
        hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
      }).format(d);
    } catch (_) {
      return d.toISOString();
    }
  }

  // ---------- API ----------
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = { Accept: 'application/json' };
    const init = { method: opts.method || 'GET', headers, credentials: 'same-origin' };
    if (init.method !== 'GET') headers['X-QP-CSRF'] = '1';
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    let r;
    let body = null;
    // Requests in flight (the browser tests wait for none before reading the page). The
    // count drops only once the body is read, so the caller's next step (often a new
    // render) starts before anyone sees zero.
    window.__qpBusy = (window.__qpBusy || 0) + 1;
    try {
      try {
        r = await fetch(path, init);
      } catch (e) {
        throw new ApiError(0, String(e));
      }
      try {
        body = await r.json();
      } catch (_) { /* not JSON */ }
    } finally {
      setTimeout(() => { window.__qpBusy -= 1; }, 0);
    }
    if (r.ok) return body;
    let msg = r.statusText;
    if (body && body.error) {
      msg = typeof body.error === 'string' ? body.error : (body.error.message || msg);
    }
    const err = new ApiError(r.status, msg);
    if (r.status === 401 && !opts.quiet) {
      st.session = null;
      renderLogin(t('session_expired'));
    }
    throw err;
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== '') u.set(k, v);
    }
    return u.toString();
  }

  // ---------- routing ----------
  function route() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [page, query] = raw.split('?');
    const params = Object.fromEntries(new URLSearchParams(query || ''));
    return { page: page || 'overview', params };
  }

  function href(page, params) {
    const q = qs(params || {});
    return '#/' + page + (q ? '?' + q : '');
  }

  function go(page, params) {
    location.hash = href(page, params);
  }

  // Changes some parameters of the current view, keeping the others.
  function setParams(changes) {
    const r = route();
    const p = Object.assign({}, r.params, changes);
    for (const k of Object.keys(p)) if (p[k] === '' || p[k] === null || p[k] === undefined) delete p[k];
    go(r.page, p);
  }

  // ---------- ranges ----------
  const PRESETS = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 24 * 3600e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
  const SLOTS = [60, 300, 900, 1800, 3600, 14400, 86400];

  // The seed's table: < 6 h → 5 min, 6–24 h → 15 min, 1–7 d → 1 h, longer → 4 h.
  function autoSlot(ms) {
    if (ms < 6 * 3600e3) return 300;
    if (ms <= 24 * 3600e3) return 900;
    if (ms <= 7 * 86400e3) return 3600;
    return 14400;
  }

  function rangeOf(p) {
    if (p.from && p.to && +p.from < +p.to) return { start: +p.from, end: +p.to, preset: null };
    const preset = PRESETS[p.range] ? p.range : '24h';
    // Rounded to the minute so that repeated loads hit the monitor's cache.
    const end = Math.ceil(Date.now() / 60000) * 60000;
    return { start: end - PRESETS[preset], end, preset };
  }

  function rangeParams(p) {
    const r = rangeOf(p);
    return { start_ms: r.start, end_ms: r.end };
  }

  function toLocalInput(ms) {
    const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 16);
  }

  function rangeBar(p, opts) {
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
            const a = new Date(from.value).getTime();
            const b = new Date(to.value).getTime();
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
      h('button', { onclick: () => render(true) }, t('refresh')),
    ]);
    return bar;
  }

  function fmtSlot(s) {
    return s >= 3600 ? (s / 3600) + 'h' : (s / 60) + 'm';
  }

  // ---------- building blocks ----------
  function banner(msg, kind) {
    const b = document.getElementById('banner');
    if (!b) return;
    clear(b);
    if (msg) append(b, [h('div', { class: 'banner ' + (kind || 'err'), role: 'alert' }, msg)]);
  }

  function showError(e) {
    if (e && e.status === 401) return;
    if (e && e.status === 503) banner(t('source_down'));
    else banner(t('error_prefix') + (e && e.message ? e.message : String(e)));
  }

  function card(title, ...body) {
    return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...body);
  }

  function csvLink(params) {
    return h('a', { class: 'btn', href: '/api/export/csv?' + qs(params), download: '', 'data-csv': params.query_type }, t('export_csv'));
  }

  // CSV of rows already on screen (views with no export endpoint).
  function csvButton(name, columns, rows) {
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
  function table(columns, rows, opts) {
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

  function chart(el, option) {
    if (!window.echarts) return;
    const c = window.echarts.init(el, null, { renderer: 'canvas' });
    c.setOption(option);
    st.charts.push(c);
  }

  // Axis labels: the time of day within a day, the date and time beyond.
  function axisTime(v, long) {
    const d = new Date(v);
    try {
      const o = long
        ? { timeZone: tz(), month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false }
        : { timeZone: tz(), hour: '2-digit', minute: '2-digit', hour12: false };
      return new Intl.DateTimeFormat(locale(), o).format(d);
    } catch (_) {
      return d.toISOString();
    }
  }

  function lineOption(rows, metrics) {
    const span = rows.length > 1 ? new Date(rows[rows.length - 1].bucket) - new Date(rows[0].bucket) : 0;
    const long = span >= 86400e3;
    return {
      animation: false,
      tooltip: { trigger: 'axis' },
      legend: { data: metrics.map((m) => t('m_' + m)), top: 0 },
      grid: { left: 60, right: 60, top: 36, bottom: 30 },
      xAxis: { type: 'category', data: rows.map((r) => axisTime(r.bucket, long)) },
      yAxis: [{ type: 'value' }, { type: 'value', splitLine: { show: false } }],
      series: metrics.map((m) => ({
        name: t('m_' + m), type: 'line', showSymbol: false,
        yAxisIndex: m === 'tokens' || m === 'quota_sum' ? 1 : 0,
        data: rows.map((r) => r[m]),
      })),
    };
  }

  function pager(total, limit, offset, onGo) {
    const a = total ? offset + 1 : 0;
    const b = Math.min(offset + limit, total);
    return h('div', { class: 'pager' },
      h('button', { disabled: offset <= 0, onclick: () => onGo(Math.max(0, offset - limit)) }, t('prev')),
      h('span', { class: 'pageinfo' }, t('page_of').replace('{a}', a).replace('{b}', b).replace('{n}', total)),
      h('button', { disabled: offset + limit >= total, onclick: () => onGo(offset + limit) }, t('next')));
  }

  function isAdmin() {
    return st.session && st.session.role === 'admin';
  }

  function hasKeys() {
    return st.session && st.session.mode === 'serve';
  }

  // ---------- modal dialogs (no window.alert/confirm/prompt) ----------
  function modal(title, body, buttons) {
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

  function showSecret(title, keys) {
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

  // ---------- shell ----------
  function destroyCharts() {
    for (const c of st.charts) c.dispose();
    st.charts = [];
  }

  function shell(page) {
    const nav = [
      ['overview', 'nav_overview'], ['rankings', 'nav_rankings'], ['heatmap', 'nav_heatmap'],
      ['anomalies', 'nav_anomalies'],
    ];
    if (hasKeys()) nav.push(['keys', 'nav_keys'], ['requests', 'nav_requests']);
    nav.push(['alerts', 'nav_alerts']);
    const tzSel = h('input', {
      id: 'tz', list: 'tz-list', value: tz(), size: 16, 'aria-label': t('time_zone'),
      onchange: (e) => {
        st.tz = e.target.value.trim();
        localStorage.setItem('qp.tz', st.tz);
        render();
      },
    });
    const zones = ['UTC', 'Asia/Shanghai', 'Asia/Hong_Kong', 'Asia/Tokyo', 'Asia/Singapore', 'Europe/London', 'Europe/Berlin', 'America/New_York', 'America/Los_Angeles'];
    const main = h('main', { id: 'main' });
    clear(app);
    append(app, [
      h('header', { class: 'top' },
        h('div', { class: 'brand' }, t('brand'),
          st.session.mode === 'monitor' ? h('span', { class: 'tag' }, t('monitor_only')) : null),
        h('nav', {}, nav.map(([p, k]) => h('a', { href: href(p, keepRange()), class: p === page ? 'on' : '', 'data-nav': p }, t(k)))),
        h('div', { class: 'right' },
          h('span', { class: 'lbl' }, t('time_zone')), tzSel,
          h('datalist', { id: 'tz-list' }, zones.map((z) => h('option', { value: z }))),
          h('button', { id: 'lang', onclick: () => { st.lang = st.lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('qp.lang', st.lang); render(); } }, t('language')),
          h('span', { class: 'role', id: 'role' }, t('role_' + st.session.role)),
          h('button', { id: 'logout', onclick: logout }, t('logout')))),
      h('div', { id: 'banner' }),
      main,
    ]);
    return main;
  }

  // The range travels with the navigation links.
  function keepRange() {
    const p = route().params;
    const out = {};
    for (const k of ['range', 'from', 'to', 'refresh']) if (p[k]) out[k] = p[k];
    return out;
  }

  async function logout() {
    try { await api('/auth/logout', { method: 'POST', quiet: true }); } catch (_) { /* already gone */ }
    st.session = null;
    renderLogin();
  }

  // ---------- login ----------
  function renderLogin(message) {
    destroyCharts();
    clearInterval(st.timer);
    document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
    const input = h('input', { type: 'password', id: 'token', autocomplete: 'current-password', 'aria-label': t('token') });
    const msg = h('p', { class: 'msg', id: 'login-msg', role: 'alert' }, message || '');
    const form = h('form', {
      class: 'login', id: 'login-form',
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api('/auth/login', { method: 'POST', body: { token: input.value }, quiet: true });
          input.value = '';
          await start();
        } catch (err) {
          msg.textContent = err.status === 401 ? t('login_failed') : (t('error_prefix') + err.message);
        }
      },
    },
    h('h1', {}, t('login_title')),
    h('p', { class: 'hint' }, t('login_hint')),
    h('label', {}, t('token'), input),
    h('button', { type: 'submit', class: 'primary', id: 'login-btn' }, t('login')),
    h('button', { type: 'button', class: 'link', onclick: () => { st.lang = st.lang === 'zh' ? 'en' : 'zh'; localStorage.setItem('qp.lang', st.lang); renderLogin(message); } }, t('language')),
    msg);
    clear(app);
    app.appendChild(h('div', { class: 'login-wrap' }, form));
    input.focus();
  }

  // ---------- pages ----------
  const PAGES = {};

  PAGES.overview = async function (main, p, gen) {
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
      ['quota_sum', 'kpi_quota', num(sum.quota_sum), sum.quota_usd !== undefined ? usd(sum.quota_usd) : null],
      ['users', 'kpi_users', num(sum.users)],
      ['keys', 'kpi_keys', num(sum.keys)],
      ['models', 'kpi_models', num(sum.models)],
    ];
    if ('error_rate' in sum) items.push(['error_rate', 'kpi_error_rate', pct(sum.error_rate)]);
    if ('latency_p50_ms' in sum) items.push(['latency_p50_ms', 'kpi_p50', num(sum.latency_p50_ms) + ' ms']);
    if ('latency_p95_ms' in sum) items.push(['latency_p95_ms', 'kpi_p95', num(sum.latency_p95_ms) + ' ms']);
    append(kpis, items.map(([k, label, v, sub]) => h('div', { class: 'kpi', 'data-kpi': k, 'data-value': sum[k] },
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
  };

  const DIMS = { user: ['user_id', 'username'], token: ['token_id', 'token_name'], model: [null, 'model_name'], channel: ['channel_id', 'channel_name'] };

  function subjectLink(kind, id, label) {
    if (id === null || id === undefined || id === '' || id === 0) return label === undefined ? '' : String(label);
    const params = Object.assign({ [kind]: id }, keepRange());
    return h('a', { href: href('subject', params), class: 'subject', 'data-subject': kind }, label === undefined || label === '' ? String(id) : String(label));
  }

  PAGES.rankings = async function (main, p, gen) {
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
    chart(chartEl, {
      animation: false,
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      grid: { left: 140, right: 30, top: 10, bottom: 30 },
      xAxis: { type: 'value' },
      yAxis: { type: 'category', data: top.map(labelOf), axisLabel: { width: 120, overflow: 'truncate' } },
      series: [{ type: 'bar', name: t('m_' + metric), data: top.map((r) => r[metric]) }],
    });
    const cols = [{ key: 'rank', label: t('col_rank'), num: true, render: (r) => String(r.rank) }];
    const rows = res.data.map((r, i) => Object.assign({ rank: i + 1 }, r));
    if (by === 'user') cols.push({ key: 'user_id', label: t('col_id'), num: true }, { key: 'username', label: t('col_user'), render: (r) => subjectLink('user_id', r.user_id, r.username || r.user_id) });
    if (by === 'token') cols.push({ key: 'token_id', label: t('col_id'), num: true }, { key: 'token_name', label: t('col_key'), render: (r) => subjectLink('token_id', r.token_id, r.token_name || r.token_id) });
    if (by === 'model') cols.push({ key: 'model_name', label: t('col_model') });
    if (by === 'channel') cols.push({ key: 'channel_id', label: t('col_id'), num: true }, { key: 'channel_name', label: t('col_channel') });
    cols.push({ key: 'tokens', label: t('col_tokens'), num: true }, { key: 'reqs', label: t('col_reqs'), num: true }, { key: 'quota_sum', label: t('col_quota'), num: true });
    append(tbl, [table(cols, rows, { sortable: true, cls: 'ranking' })]);
  };

  PAGES.heatmap = async function (main, p, gen) {
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
  };

  function compact(v) {
    return new Intl.NumberFormat(locale(), { notation: 'compact', maximumFractionDigits: 1 }).format(v);
  }

  const RULES = {
    burst: { params: { window_sec: 60, limit_per_token: 120 } },
    multi_user_token: { params: { users_threshold: 2, ips_threshold: 5 } },
    ip_many_users: { params: { users_threshold: 5 } },
    big_request: { params: { sigma: 3, scope: 'model' } },
  };

  function ruleParams(rule, p) {
    const out = {};
    for (const [k, d] of Object.entries(RULES[rule].params)) out[k] = p[k] !== undefined && p[k] !== '' ? p[k] : d;
    return out;
  }

  PAGES.anomalies = async function (main, p, gen) {
    const rule = RULES[p.rule] ? p.rule : 'burst';
    const rp = rangeParams(p);
    const tabs = h('div', { class: 'tabs', id: 'rule-tabs' });
    const form = h('form', { class: 'toolbar', id: 'rule-form', onsubmit: (e) => {
      e.preventDefault();
      const changes = {};
      for (const el of form.querySelectorAll('[name]')) changes[el.name] = el.value;
      setParams(changes);
    } });
    const rp2 = ruleParams(rule, p);
    for (const [k, v] of Object.entries(rp2)) {
      const input = k === 'scope'
        ? h('select', { name: k }, ['model', 'global'].map((s) => h('option', { value: s, selected: s === v }, t('scope_' + s))))
        : h('input', { name: k, value: v, size: 6, inputmode: 'decimal' });
      append(form, [h('label', {}, t('p_' + k), ' ', input)]);
    }
    const list = h('div', { id: 'anomaly-table' });
    const q = Object.assign({ rule }, rp2, rp);
    append(form, [h('button', { type: 'submit' }, t('apply')), csvLink(Object.assign({ query_type: 'anomalies' }, q))]);
    append(main, [rangeBar(p), tabs, form, card(null, list)]);
    // Every tab shows its count, each rule with its own (default or edited) parameters.
    const all = await Promise.all(Object.keys(RULES).map((r) =>
      api('/api/stats/anomalies?' + qs(Object.assign({ rule: r }, ruleParams(r, r === rule ? p : {}), rp)))));
    if (gen !== st.gen) return;
    Object.keys(RULES).forEach((r, i) => {
      tabs.appendChild(h('a', {
        href: href('anomalies', Object.assign({}, keepRange(), { rule: r })),
        class: 'tab' + (r === rule ? ' on' : ''), 'data-rule': r, 'data-count': all[i].total_count,
      }, t('rule_' + r), ' ', h('span', { class: 'count' }, num(all[i].total_count))));
    });
    const res = all[Object.keys(RULES).indexOf(rule)];
    const user = { key: 'username', label: t('col_user'), render: (r) => subjectLink('user_id', r.user_id, r.username || r.user_id) };
    const key = { key: 'token_name', label: t('col_key'), render: (r) => subjectLink('token_id', r.token_id, r.token_name || r.token_id) };
    const cols = {
      burst: [key, user, { key: 'request_count', label: t('a_request_count'), num: true },
        { key: 'first_request', label: t('a_first'), render: (r) => when(r.first_request) },
        { key: 'last_request', label: t('a_last'), render: (r) => when(r.last_request) }],
      multi_user_token: [key, { key: 'user_count', label: t('a_user_count'), num: true }, { key: 'ip_count', label: t('a_ip_count'), num: true },
        { key: 'users', label: t('a_users') }, { key: 'total_requests', label: t('a_total'), num: true }],
      ip_many_users: [{ key: 'ip', label: t('col_ip'), render: (r) => subjectLink('ip', r.ip) }, { key: 'user_count', label: t('a_user_count'), num: true },
        { key: 'users', label: t('a_users') }, { key: 'total_requests', label: t('a_total'), num: true }],
      big_request: [key, user, { key: 'model_name', label: t('col_model') }, { key: 'token_count', label: t('a_token_count'), num: true },
        { key: 'mean_tokens', label: t('a_mean'), num: true }, { key: 'threshold', label: t('a_threshold'), num: true },
        { key: 'created_at', label: t('col_time'), render: (r) => when(r.created_at) }],
    }[rule];
    append(list, [table(cols, res.data, { sortable: true, cls: 'anomalies' })]);
  };

  PAGES.subject = async function (main, p, gen) {
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
      { key: 'quota_sum', label: t('col_quota'), num: true },
      { key: 'ip', label: t('col_ip'), render: (r) => subjectLink('ip', r.ip) },
    ];
    append(tbl, [
      h('div', { class: 'card-tools' }, h('span', {}, t('total') + ' ' + num(res.total_count)),
        csvButton('requests', ['created_at', 'token_id', 'token_name', 'user_id', 'username', 'model_name', 'tokens', 'quota_sum', 'ip'], res.requests)),
      table(cols, res.requests, { sortable: true })]);
  };

  // ---------- keys ----------
  function intOrNull(v) {
    v = String(v || '').trim();
    if (!v) return null;
    const n = Number(v);
    return Number.isInteger(n) ? n : v; // the API names the field when it is not a number
  }

  function listOrNull(v) {
    const l = String(v || '').split(',').map((s) => s.trim()).filter(Boolean);
    return l.length ? l : null;
  }

  async function keyAction(action, k) {
    try {
      if (action === 'disable' || action === 'enable') {
        await api('/admin/keys/' + action, { method: 'POST', body: { key: String(k.id) } });
      } else if (action === 'reset') {
        const input = h('input', { id: 'new-quota', inputmode: 'numeric', value: k.quota === null ? '' : k.quota });
        const v = await modal(t('reset') + ' ' + k.key, h('label', {}, t('new_quota'), input),
          [{ id: 'cancel', label: t('cancel'), value: null }, { id: 'confirm', label: t('confirm'), primary: true, value: () => input.value }]);
        if (v === null) return;
        const body = { key: String(k.id) };
        if (String(v).trim() !== '') body.newQuota = intOrNull(v);
        await api('/admin/keys/reset', { method: 'POST', body });
      } else if (action === 'rotate') {
        const ok = await modal(t('rotate'), h('p', {}, t('confirm_rotate') + ' ', h('b', {}, k.key), '?'),
          [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('rotate'), danger: true, value: true }]);
        if (!ok) return;
        const r = await api('/admin/keys/' + k.id + '/rotate', { method: 'POST' });
        await showSecret(t('rotate'), [r.key]);
      } else if (action === 'delete') {
        const ok = await modal(t('delete'), h('p', {}, t('confirm_delete') + ' ', h('b', {}, k.key), '?'),
          [{ id: 'cancel', label: t('cancel'), value: false }, { id: 'confirm', label: t('delete'), danger: true, value: true }]);
        if (!ok) return;
        await api('/admin/keys/' + k.id, { method: 'DELETE' });
      }
      render();
    } catch (e) {
      showError(e);
    }
  }

  function keyActions(k) {
    if (!isAdmin()) return '';
    return h('div', { class: 'actions' },
      h('button', { 'data-act': k.enabled ? 'disable' : 'enable', onclick: () => keyAction(k.enabled ? 'disable' : 'enable', k) }, t(k.enabled ? 'disable' : 'enable')),
      h('button', { 'data-act': 'reset', onclick: () => keyAction('reset', k) }, t('reset')),
      h('button', { 'data-act': 'rotate', onclick: () => keyAction('rotate', k) }, t('rotate')),
      h('button', { 'data-act': 'delete', class: 'danger', onclick: () => keyAction('delete', k) }, t('delete')));
  }

  async function createKey() {
    const f = {};
    const field = (name, label, attrs) => {
      f[name] = h('input', Object.assign({ name, id: 'new-' + name }, attrs || {}));
      return h('label', {}, t(label), f[name]);
    };
    f.refill_interval = h('select', { name: 'refill_interval', id: 'new-refill_interval' },
      ['', 'daily', 'weekly', 'monthly'].map((v) => h('option', { value: v }, v ? t(v) : t('none'))));
    const body = h('div', { class: 'form-grid' },
      field('name', 'name'), field('prefix', 'prefix', { placeholder: 'qp' }),
      field('quota', 'quota', { inputmode: 'numeric', placeholder: t('unlimited') }),
      field('expiresAt', 'expires_at', { type: 'date' }), field('count', 'count', { inputmode: 'numeric', value: '1' }),
      field('ownerId', 'owner_id', { inputmode: 'numeric' }), field('ownerName', 'owner_name'),
      field('dailyRequests', 'daily_requests', { inputmode: 'numeric' }), field('rpm', 'rpm', { inputmode: 'numeric' }),
      field('tpm', 'tpm', { inputmode: 'numeric' }), field('maxConcurrent', 'max_concurrent', { inputmode: 'numeric' }),
      field('models', 'models_allowed'), field('ips', 'ips_allowed'),
      h('label', {}, t('refill_interval'), f.refill_interval), field('refillAmount', 'refill_amount', { inputmode: 'numeric' }),
      h('p', { class: 'msg', id: 'create-msg', role: 'alert' }));
    const submit = async () => {
      const v = (n) => f[n].value.trim();
      const req = { count: intOrNull(v('count')) || 1 };
      if (v('name')) req.name = v('name');
      if (v('prefix')) req.prefix = v('prefix');
      if (v('quota')) req.quota = intOrNull(v('quota'));
      if (v('expiresAt')) req.expiresAt = v('expiresAt');
      if (v('ownerId') || v('ownerName')) {
        req.owner = {};
        if (v('ownerId')) req.owner.userId = intOrNull(v('ownerId'));
        if (v('ownerName')) req.owner.username = v('ownerName');
      }
      const limits = {};
      for (const k of ['dailyRequests', 'rpm', 'tpm', 'maxConcurrent']) if (v(k)) limits[k] = intOrNull(v(k));
      if (listOrNull(v('models'))) limits.models = listOrNull(v('models'));
      if (listOrNull(v('ips'))) limits.ips = listOrNull(v('ips'));
      if (Object.keys(limits).length) req.limits = limits;
      if (v('refill_interval')) req.refill = { interval: v('refill_interval'), amount: intOrNull(v('refillAmount')) || 0 };
      return api('/admin/keys', { method: 'POST', body: req });
    };
    // The dialog stays open until the key is created or the operator cancels.
    for (;;) {
      const go2 = await modal(t('create_key'), body, [
        { id: 'cancel', label: t('cancel'), value: false }, { id: 'create', label: t('create'), primary: true, value: true }]);
      if (!go2) return;
      try {
        const r = await submit();
        const keys = r.keys ? r.keys.map((k) => k.key) : [r.key];
        await showSecret(t('create_key'), keys);
        render();
        return;
      } catch (e) {
        if (e.status === 401) return;
        body.querySelector('#create-msg').textContent = t('error_prefix') + e.message;
      }
    }
  }

  PAGES.keys = async function (main, p, gen) {
    const limit = 50;
    const offset = +p.offset || 0;
    const search = h('input', { id: 'key-search', value: p.q || '', placeholder: t('search'), size: 28 });
    const status = h('select', { id: 'key-status', onchange: (e) => setParams({ status: e.target.value, offset: '' }) },
      ['', 'active', 'disabled', 'expired', 'exhausted'].map((s) => h('option', { value: s, selected: s === (p.status || '') }, t('st_' + (s || 'all')))));
    const list = h('div', { id: 'keys-table' });
    append(main, [
      h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); setParams({ q: search.value.trim(), offset: '' }); } },
        search, h('button', { type: 'submit' }, t('apply')), h('span', { class: 'lbl' }, t('status')), status,
        isAdmin() ? h('button', { type: 'button', class: 'primary', id: 'create-key', onclick: createKey }, t('create_key')) : null),
      card(null, list),
    ]);
    const res = await api('/admin/keys?' + qs({ status: p.status, q: p.q, limit, offset }));
    if (gen !== st.gen) return;
    const cols = [
      { key: 'id', label: t('col_id'), num: true },
      { key: 'name', label: t('name'), render: (k) => h('a', { href: href('key', { id: k.id }), class: 'keylink' }, k.name || '—') },
      { key: 'key', label: t('col_key'), render: (k) => h('code', {}, k.key) },
      { key: 'status', label: t('status'), render: (k) => h('span', { class: 'pill ' + k.status }, t('st_' + k.status)) },
      { key: 'quota', label: t('quota'), num: true, render: (k) => k.quota === null ? t('unlimited') : num(k.quota) },
      { key: 'used', label: t('used'), num: true },
      { key: 'remaining', label: t('remaining'), num: true, render: (k) => k.remaining === null ? t('unlimited') : num(k.remaining) },
      { key: 'expiresAt', label: t('expires_at'), render: (k) => when(k.expiresAt) },
      { key: 'lastUsed', label: t('last_used'), render: (k) => when(k.lastUsed) },
    ];
    if (isAdmin()) cols.push({ key: 'actions', label: t('actions'), render: keyActions });
    append(list, [
      h('div', { class: 'card-tools' }, csvButton('keys', ['id', 'name', 'key', 'status', 'quota', 'used', 'remaining', 'expiresAt', 'createdAt', 'lastUsed'], res.keys)),
      table(cols, res.keys, { cls: 'keys' }),
      pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
    ]);
  };

  function requestColumns() {
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

  const REQUEST_CSV = ['timestamp', 'requestId', 'keyId', 'keyName', 'ownerUserId', 'ownerUsername', 'endpoint', 'model', 'upstream', 'promptTokens', 'completionTokens', 'cost', 'status', 'error', 'latencyMs', 'ttftMs', 'isStream', 'clientIp'];

  PAGES.requests = async function (main, p, gen) {
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
  };

  function limitsText(l) {
    const parts = [];
    const names = { dailyRequests: 'daily_requests', rpm: 'rpm', tpm: 'tpm', maxConcurrent: 'max_concurrent' };
    for (const [k, label] of Object.entries(names)) if (l[k] !== undefined) parts.push(t(label) + ' ' + num(l[k]));
    if (l.models) parts.push(t('col_model') + ': ' + l.models.join(', '));
    if (l.ips) parts.push('IP: ' + l.ips.join(', '));
    return parts.length ? parts.join(' · ') : t('none');
  }

  PAGES.key = async function (main, p, gen) {
    const id = p.id;
    const head = h('div', { id: 'key-detail' });
    const hist = h('div', { id: 'key-history' });
    const reqs = h('div', { id: 'key-requests' });
    append(main, [card(t('key_detail') + ' #' + id, head), card(t('usage_history'), hist), card(t('gateway_requests'), reqs)]);
    const [k, hi, rq] = await Promise.all([
      api('/admin/keys/' + encodeURIComponent(id)),
      api('/admin/usage/history?' + qs({ key: id, limit: 100 })),
      api('/admin/requests?' + qs({ key: id, limit: 100 })),
    ]);
    if (gen !== st.gen) return;
    const rows = [
      [t('name'), k.name || '—'], [t('col_key'), h('code', {}, k.key)], [t('status'), t('st_' + k.status)],
      [t('quota'), k.quota === null ? t('unlimited') : num(k.quota)], [t('used'), num(k.used)],
      [t('remaining'), k.remaining === null ? t('unlimited') : num(k.remaining)],
      [t('expires_at'), when(k.expiresAt)], [t('created_at'), when(k.createdAt)], [t('last_used'), when(k.lastUsed)],
      [t('owner_name'), k.owner ? [k.owner.username || '', k.owner.userId !== undefined ? ' (' + k.owner.userId + ')' : ''].join('') : '—'],
      [t('limits'), limitsText(k.limits || {})],
      [t('refill_interval'), k.refill ? t(k.refill.interval) + ' → ' + num(k.refill.amount) : '—'],
    ];
    append(head, [
      h('dl', { class: 'props' }, rows.map(([a, b]) => [h('dt', {}, a), h('dd', {}, b)])),
      h('div', { class: 'toolbar' }, keyActions(k), h('a', { class: 'btn', href: href('subject', { token_id: k.id }) }, t('trend'))),
    ]);
    append(hist, [h('div', { class: 'card-tools' }, csvButton('key-' + id + '-history', ['timestamp', 'amount', 'reason', 'remaining'], hi.history)), table([
      { key: 'timestamp', label: t('col_time'), render: (r) => when(r.timestamp) },
      { key: 'amount', label: t('amount'), num: true },
      { key: 'reason', label: t('reason') },
      { key: 'remaining', label: t('remaining'), num: true },
    ], hi.history)]);
    append(reqs, [
      h('div', { class: 'card-tools' }, csvButton('key-' + id + '-requests', REQUEST_CSV, rq.requests)),
      table(requestColumns(), rq.requests),
    ]);
  };

  // ---------- alerts ----------
  const ALERT_RULES = ['burst', 'multi_user_token', 'ip_many_users', 'big_request', 'quota_low', 'key_expiring', 'upstream_down'];
  const ALERT_STATUS = ['sent', 'partial', 'failed', 'sending', 'recorded'];

  PAGES.alerts = async function (main, p, gen) {
    const limit = 50;
    const offset = +p.offset || 0;
    const rule = h('select', { id: 'alert-rule', onchange: (e) => setParams({ rule: e.target.value, offset: '' }) },
      h('option', { value: '' }, t('st_all')),
      ALERT_RULES.map((r) => h('option', { value: r, selected: r === p.rule }, t('rule_' + r))));
    const status = h('select', { id: 'alert-status', onchange: (e) => setParams({ status: e.target.value, offset: '' }) },
      h('option', { value: '' }, t('st_all')),
      ALERT_STATUS.map((s) => h('option', { value: s, selected: s === p.status }, t('as_' + s))));
    const list = h('div', { id: 'alerts-table' });
    const chans = h('div', { id: 'alert-channels' });
    append(main, [
      h('div', { class: 'toolbar' }, h('span', { class: 'lbl' }, t('rule')), rule, h('span', { class: 'lbl' }, t('status')), status),
      card(t('alert_history'), list),
      card(t('alert_channels'), chans),
    ]);
    const [res, ch] = await Promise.all([
      api('/admin/alerts?' + qs({ rule: p.rule, status: p.status, limit, offset })),
      api('/admin/alerts/channels'),
    ]);
    if (gen !== st.gen) return;
    const deliveries = (a) => {
      const by = {};
      for (const d of a.deliveries) by[d.channel] = d;
      return h('div', { class: 'deliveries' }, Object.values(by).map((d) => h('span', {
        class: 'pill ' + (d.ok ? 'active' : 'disabled'), title: d.error || '',
      }, d.channel + (d.attempt > 1 ? ' ×' + d.attempt : ''))));
    };
    const cols = [
      { key: 'timestamp', label: t('col_time'), render: (a) => when(a.timestamp) },
      { key: 'rule', label: t('rule'), render: (a) => t('rule_' + a.rule) },
      { key: 'title', label: t('alert_title'), render: (a) => a.link ? h('a', { href: a.link.slice(a.link.indexOf('#')) }, a.title) : a.title },
      { key: 'message', label: t('alert_message'), render: (a) => h('span', { class: 'multiline' }, a.message) },
      { key: 'status', label: t('status'), render: (a) => h('span', { class: 'pill ' + ({ sent: 'active', failed: 'disabled', partial: 'expired' }[a.status] || '') }, t('as_' + a.status)) },
      { key: 'deliveries', label: t('alert_deliveries'), render: deliveries },
    ];
    append(list, [
      h('div', { class: 'card-tools' }, csvButton('alerts', ['id', 'timestamp', 'rule', 'subject', 'title', 'message', 'status', 'link'], res.alerts)),
      table(cols, res.alerts, { cls: 'alerts' }),
      pager(res.total, limit, offset, (o) => setParams({ offset: o || '' })),
    ]);
    const testCell = (c) => {
      if (!isAdmin()) return '';
      const out = h('span', { class: 'test-result' });
      return h('span', {}, h('button', {
        'data-test-channel': c.name,
        onclick: async () => {
          out.textContent = '…';
          try {
            const r = await api('/admin/alerts/test', { method: 'POST', body: { channel: c.name } });
            out.textContent = r.ok ? t('test_ok') : t('test_failed') + ' ' + (r.error || '');
          } catch (e) { showError(e); }
        },
      }, t('send_test')), ' ', out);
    };
    append(chans, [
      h('p', { class: 'hint' }, ch.enabled ? t('alerts_on') + ' · ' + t('cooldown') + ' ' + num(ch.cooldownSec) + ' s' : t('alerts_off')),
      table([
        { key: 'name', label: t('name') },
        { key: 'kind', label: t('up_kind') },
        { key: 'url', label: 'URL', render: (c) => h('code', {}, c.url) },
        { key: 'signed', label: t('signed'), render: (c) => t(c.signed ? 'yes' : 'no') },
        { key: 'rules', label: t('rule'), render: (c) => c.rules.length ? c.rules.map((r) => t('rule_' + r)).join(', ') : t('st_all') },
        { key: 'test', label: t('actions'), render: testCell },
      ], ch.channels, { cls: 'channels' }),
    ]);
  };

  // ---------- render loop ----------
  async function render() {
    if (!st.session) return renderLogin();
    destroyCharts();
    clearInterval(st.timer);
    clearTimeout(st.timer);
    const gen = ++st.gen;
    document.documentElement.lang = st.lang === 'zh' ? 'zh-CN' : 'en';
    let { page, params } = route();
    if (!PAGES[page] || ((page === 'keys' || page === 'requests' || page === 'key') && !hasKeys())) page = 'overview';
    const main = shell(page);
    document.title = t('nav_' + page) === 'nav_' + page ? t('brand') : t('nav_' + page) + ' · ' + t('brand');
    const loading = h('p', { class: 'loading' }, t('loading'));
    main.appendChild(loading);
    let retrying = false;
    try {
      await PAGES[page](main, params, gen);
      if (gen === st.gen) banner('');
    } catch (e) {
      if (gen === st.gen) {
        showError(e);
        // The source may come back: try the view again (the banner says so).
        if (e && e.status === 503) {
          retrying = true;
          st.timer = setTimeout(() => { if (gen === st.gen) render(); }, 10000);
        }
      }
    } finally {
      loading.remove();
      if (gen === st.gen) {
        main.setAttribute('data-ready', '1');
        // Milliseconds from navigation to a complete view (read by the benchmark).
        window.__qpReadyAt = performance.now();
      }
    }
    if (params.refresh === '1' && gen === st.gen && !retrying) {
      st.timer = setInterval(() => { if (gen === st.gen) render(); }, 30000);
    }
  }

  async function start() {
    try {
      st.session = await api('/auth/session', { quiet: true });
      if (!st.session.authenticated) {
        st.session = null;
        return renderLogin();
      }
    } catch (e) {
      st.session = null;
      return renderLogin(e.status && e.status !== 401 ? t('error_prefix') + e.message : '');
    }
    render();
  }

  window.addEventListener('hashchange', () => render());
  window.addEventListener('resize', () => st.charts.forEach((c) => c.resize()));
  start();
})();
