/**
 * The scale curve's chart (bench/scale.ts): an SVG of two rows of panels, one per series
 * (tables, width, big transaction, datasources, MariaDB); the top row throughput (rows/s), the
 * bottom row peak RSS (MB), evpub beside the minimal relay where the relay ran. Drawn with the
 * CDC chart's panels (chart.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { COLORS, panel } from './chart';

interface PointResult {
  series: string;
  label: string;
  system: 'relay' | 'evpub';
  perSec: number;
  peakRssMb: number;
  error?: string;
}
interface Report {
  date: string;
  quick?: boolean;
  machine: { cpus: string };
  settings: { broker: string };
  results: PointResult[];
}

const TITLES: Record<string, string> = {
  tables: 'Tables in one datasource',
  width: 'Row width (1 table)',
  bigtx: 'One big transaction',
  datasources: 'PostgreSQL slots in one process',
  mariadb: 'MariaDB binlog',
};
const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

export function renderScaleChart(report: Report): string {
  const series = Object.keys(TITLES).filter((s) => report.results.some((r) => r.series === s && !r.error));
  const panelWidth = 300;
  const rowHeight = 320;
  const width = Math.max(1, series.length) * panelWidth;
  const groups = (s: string, value: (r: PointResult) => number) => {
    const labels = [...new Set(report.results.filter((r) => r.series === s).map((r) => r.label))];
    return labels.map((label) => ({
      name: label,
      bars: (['relay', 'evpub'] as const).flatMap((system) => {
        const r = report.results.find((x) => x.series === s && x.label === label && x.system === system);
        return r && !r.error
          ? [
              {
                label: system === 'relay' ? 'minimal relay' : 'evpub',
                value: value(r),
                color: COLORS[system],
              },
            ]
          : [];
      }),
    }));
  };
  const rows = [
    { unit: 'rows/s', value: (r: PointResult) => r.perSec, what: 'throughput' },
    { unit: 'MB', value: (r: PointResult) => r.peakRssMb, what: 'peak RSS' },
  ];
  const panels = rows.flatMap((row, ri) =>
    series.map(
      (s, si) =>
        `<g transform="translate(0 ${ri * rowHeight})">${panel(
          si * panelWidth,
          `${TITLES[s]}: ${row.what}`,
          row.unit,
          groups(s, row.value),
          panelWidth,
          rowHeight,
        )}</g>`,
    ),
  );
  const height = rows.length * rowHeight;
  const legend = [
    ['minimal relay', COLORS.relay],
    ['evpub', COLORS.evpub],
  ]
    .map(
      ([label, color], i) =>
        `<rect x="${20 + i * 140}" y="${height + 2}" width="12" height="12" fill="${color}"/><text x="${36 + i * 140}" y="${height + 12}" font-size="11">${escape(label!)}</text>`,
    )
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + 36}" viewBox="0 0 ${width} ${height + 36}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${panels.join('\n')}
${legend}
<text x="${width - 10}" y="${height + 30}" text-anchor="end" font-size="10" fill="#666">${escape(
    `evpub scale curve${report.quick ? ' (quick run)' : ''}, ${report.date.slice(0, 10)}, ${report.settings.broker}, ${report.machine.cpus}`,
  )}</text>
</svg>
`;
}

/** `tsx bench/cdc/scale-chart.ts bench/results/scale-<date>.json`: draws a saved run's chart again. */
if (require.main === module) {
  const file = process.argv[2]!;
  writeFileSync(
    file.replace(/\.json$/, '.svg'),
    renderScaleChart(JSON.parse(readFileSync(file, 'utf8')) as Report),
  );
}
