// The four risk rules, each a tab with its own parameters.

import { api, qs } from './api.js';
import { append, card, h, table } from './dom.js';
import { num, when } from './format.js';
import { href, keepRange, rangeParams, setParams } from './router.js';
import { st, t } from './state.js';
import { csvLink, rangeBar, subjectLink } from './widgets.js';

export const RULES = {
  burst: { params: { window_sec: 60, limit_per_token: 120 } },
  multi_user_token: { params: { users_threshold: 2, ips_threshold: 5 } },
  ip_many_users: { params: { users_threshold: 5 } },
  big_request: { params: { sigma: 3, scope: 'model' } },
};

export function ruleParams(rule, p) {
  const out = {};
  for (const [k, d] of Object.entries(RULES[rule].params)) out[k] = p[k] !== undefined && p[k] !== '' ? p[k] : d;
  return out;
}

export async function page(main, p, gen) {
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
}
