// ECharts (loaded as a classic script before the modules) for the view on screen.

import { axisTime, quotaValue } from './format.js';
import { st, t } from './state.js';

export function chart(el, option) {
  if (!window.echarts) return;
  const c = window.echarts.init(el, null, { renderer: 'canvas' });
  c.setOption(option);
  st.charts.push(c);
}

export function lineOption(rows, metrics) {
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
      data: rows.map((r) => (m === 'quota_sum' ? quotaValue(r[m]) : r[m])),
    })),
  };
}

export function destroyCharts() {
  for (const c of st.charts) c.dispose();
  st.charts = [];
}
