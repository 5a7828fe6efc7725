/**
 * Line charts with uPlot (bundled). Every chart also exposes what it plots:
 * `data-x` and `data-series` (JSON) on its <figure>, and a table of the
 * values under "Data", for screen readers and for tests that read the plotted
 * values back.
 */
import uPlot from 'uplot';
import { h } from './dom.js';

export interface SeriesSpec {
  label: string;
  values: Array<number | null>;
  color: string;
  /** Scale key (series on different units get different scales). Default 'y'. */
  scale?: string;
  dash?: number[];
}

export interface ChartSpec {
  name: string;
  title: string;
  xLabel: string;
  x: number[];
  series: SeriesSpec[];
  /** Fixed y range of the default scale, e.g. [0, 1] for accuracy. */
  yRange?: [number, number];
}

export interface Chart {
  figure: HTMLElement;
  update(x: number[], series: Array<Array<number | null>>): void;
}

export function lineChart(spec: ChartSpec): Chart {
  const plot = h('div', { class: 'plot' });
  const table = h('details', {}, h('summary', { class: 'muted' }, 'Data'));
  const figure = h('figure', { 'data-chart': spec.name, role: 'group', 'aria-label': spec.title }, h('figcaption', {}, spec.title), plot, table);
  let x = spec.x;
  let values = spec.series.map((s) => s.values);
  const expose = (): void => {
    figure.dataset['x'] = JSON.stringify(x);
    figure.dataset['series'] = JSON.stringify(Object.fromEntries(spec.series.map((s, i) => [s.label, values[i]])));
  };
  // The value table is built when opened (1,000 rows per chart would slow the first paint).
  table.addEventListener('toggle', () => {
    if (!(table as HTMLDetailsElement).open || table.querySelector('table')) return;
    const cell = (v: number | null | undefined) => h('td', { class: 'num' }, v === null || v === undefined ? '–' : String(v));
    const rows = x.map((xv, i) => h('tr', {}, h('td', { class: 'num' }, xv), ...values.map((series) => cell(series[i]))));
    table.append(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, spec.xLabel), ...spec.series.map((s) => h('th', {}, s.label)))), h('tbody', {}, ...rows)));
  });
  expose();
  const scales: uPlot.Scales = { x: { time: false } };
  if (spec.yRange) scales['y'] = { range: spec.yRange };
  const extraScales = [...new Set(spec.series.map((s) => s.scale).filter((s): s is string => s !== undefined && s !== 'y'))];
  const opts: uPlot.Options = {
    width: 520,
    height: 220,
    scales,
    legend: { live: true },
    // Rounds and model versions are integers: integer ticks only on the x axis.
    axes: [{ label: spec.xLabel, incrs: [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000] }, { scale: 'y' }, ...extraScales.map((scale) => ({ scale, side: 1 as const, grid: { show: false } }))],
    series: [{ label: spec.xLabel }, ...spec.series.map((s) => ({ label: s.label, stroke: s.color, width: 2, scale: s.scale ?? 'y', spanGaps: true, ...(s.dash && { dash: s.dash }), points: { show: false } }))],
  };
  let u: uPlot | null = null;
  const draw = (): void => {
    const width = Math.max(320, Math.floor(plot.clientWidth || 520));
    if (u === null) u = new uPlot({ ...opts, width }, [x, ...values] as uPlot.AlignedData, plot);
    else u.setData([x, ...values] as uPlot.AlignedData);
  };
  // Drawn once the figure is in the document (its width is known then).
  requestAnimationFrame(draw);
  return {
    figure,
    update(nx, nvalues) {
      x = nx;
      values = nvalues;
      expose();
      table.querySelector('table')?.remove();
      if (u !== null) u.setData([x, ...values] as uPlot.AlignedData);
    },
  };
}
