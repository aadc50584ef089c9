// Alert history and channels (with a test message).

import { api, qs } from './api.js';
import { append, card, csvButton, h, pager, showError, table } from './dom.js';
import { num, when } from './format.js';
import { href, setParams } from './router.js';
import { isAdmin, st, t } from './state.js';

export const ALERT_RULES = ['burst', 'multi_user_token', 'ip_many_users', 'big_request', 'quota_low', 'key_expiring', 'upstream_down', 'auth_failures', 'quota_request'];

export const ALERT_STATUS = ['sent', 'partial', 'failed', 'sending', 'recorded'];

export async function page(main, p, gen) {
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
    // Nothing configured: say exactly what to set, in the environment or the config file.
    ch.channels.length ? null : h('div', { class: 'setup-hint', id: 'alerts-setup' },
      h('p', { class: 'hint' }, t('alerts_setup')),
      h('pre', { class: 'reply' }, [
        '# ' + t('alerts_setup_env'),
        'ALERT_DINGTALK_URL=https://oapi.dingtalk.com/robot/send?access_token=…',
        'ALERT_DINGTALK_SECRET=SEC…',
        'ALERT_FEISHU_URL=https://open.feishu.cn/open-apis/bot/v2/hook/…',
        'ALERT_WECOM_URL=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…',
        'ALERT_SLACK_URL=https://hooks.slack.com/services/…',
        'ALERT_WEBHOOK_URL=https://example.com/hook',
        '',
        '# ' + t('alerts_setup_file'),
        '[[alerts.channels]]',
        'name = "ops"',
        'kind = "dingtalk"   # dingtalk | feishu | wechat_work | slack | webhook',
        'url = "https://oapi.dingtalk.com/robot/send?access_token=…"',
        'secret = "SEC…"',
        'rules = ["upstream_down", "quota_low"]   # ' + t('alerts_setup_rules'),
      ].join('\n'))),
  ]);
}
