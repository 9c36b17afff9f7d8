/**
 * The CDC benchmark's chart, an SVG with two panels: burst throughput per broker (ceiling,
 * relay, evpub) and steady-state p99 latency per broker and rate (relay, evpub).
 */
import { readFileSync, writeFileSync } from 'node:fs';

interface Scenario {
  perSec: number;
  latency: { p50: number; p99: number };
}
interface SystemResult {
  burst: Scenario;
  steady: Record<string, Scenario>;
}
interface Report {
  date: string;
  machine: { cpus: string };
  settings: { rows: number; rates: number[] };
  results: Record<string, unknown>[];
}

export const COLORS = { ceiling: '#9e9e9e', relay: '#4c78a8', evpub: '#f58518' };
const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

interface Bar {
  label: string;
  value: number;
  color: string;
}

/** One panel of grouped bars, with a y axis of 5 ticks; returns SVG elements. */
export function panel(
  x0: number,
  title: string,
  unit: string,
  groups: { name: string; bars: Bar[] }[],
  width: number,
  height: number,
): string {
  const top = 50;
  const bottom = height - 60;
  const left = x0 + 60;
  const right = x0 + width - 10;
  const max = Math.max(1, ...groups.flatMap((g) => g.bars.map((b) => b.value)));
  const step = 10 ** Math.floor(Math.log10(max / 5));
  const tick = [1, 2, 2.5, 5, 10].map((m) => m * step).find((t) => t * 5 >= max)!;
  const scale = (v: number): number => bottom - (v / (tick * 5)) * (bottom - top);
  const out: string[] = [
    `<text x="${x0 + width / 2}" y="24" text-anchor="middle" font-weight="bold">${escape(title)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const y = scale(i * tick);
    out.push(`<line x1="${left}" x2="${right}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    out.push(
      `<text x="${left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${(i * tick).toLocaleString('en-US')}</text>`,
    );
  }
  out.push(
    `<text x="${x0 + 14}" y="${(top + bottom) / 2}" font-size="11" transform="rotate(-90 ${x0 + 14} ${(top + bottom) / 2})" text-anchor="middle">${escape(unit)}</text>`,
  );
  const groupWidth = (right - left) / Math.max(1, groups.length);
  for (const [gi, g] of groups.entries()) {
    const barWidth = Math.min(28, (groupWidth - 12) / Math.max(1, g.bars.length));
    const gx = left + gi * groupWidth + (groupWidth - barWidth * g.bars.length) / 2;
    for (const [bi, b] of g.bars.entries()) {
      const x = gx + bi * barWidth;
      const y = scale(b.value);
      out.push(
        `<rect x="${x}" y="${y}" width="${barWidth - 2}" height="${bottom - y}" fill="${b.color}"><title>${escape(`${g.name} ${b.label}: ${b.value.toLocaleString('en-US')} ${unit}`)}</title></rect>`,
      );
    }
    out.push(
      `<text x="${left + gi * groupWidth + groupWidth / 2}" y="${bottom + 16}" text-anchor="middle" font-size="12">${escape(g.name)}</text>`,
    );
  }
  return out.join('\n');
}

export function renderChart(report: Report): string {
  const ok = report.results.filter((r) => !r.error) as {
    broker: string;
    note?: string;
    ceiling: Scenario;
    relay: SystemResult;
    evpub: SystemResult;
  }[];
  // A broker with a note (Kafka's mock cluster) has latencies of its own making: they would set
  // the scale and flatten every other bar.
  const timed = ok.filter((r) => !r.note);
  const width = 1000;
  const height = 380;
  const throughput = panel(
    0,
    `Burst: ${report.settings.rows.toLocaleString('en-US')} inserts, end to end`,
    'rows/s',
    ok.map((r) => ({
      name: r.broker,
      bars: [
        { label: 'broker ceiling', value: r.ceiling.perSec, color: COLORS.ceiling },
        { label: 'minimal relay', value: r.relay.burst.perSec, color: COLORS.relay },
        { label: 'evpub', value: r.evpub.burst.perSec, color: COLORS.evpub },
      ],
    })),
    width / 2,
    height,
  );
  const rates = report.settings.rates;
  const latency = panel(
    width / 2,
    `Steady: p99 latency at ${rates.map((r) => r.toLocaleString('en-US')).join(' / ')} rows/s`,
    'ms',
    timed.map((r) => ({
      name: r.broker,
      bars: rates.flatMap((rate, i) => [
        {
          label: `relay @${rate}/s`,
          value: r.relay.steady[rate]?.latency.p99 ?? 0,
          color: i === 0 ? COLORS.relay : '#9ecae9',
        },
        {
          label: `evpub @${rate}/s`,
          value: r.evpub.steady[rate]?.latency.p99 ?? 0,
          color: i === 0 ? COLORS.evpub : '#ffbf79',
        },
      ]),
    })),
    width / 2,
    height,
  );
  const legend = [
    ['broker ceiling (raw client, pre-built messages)', COLORS.ceiling],
    ['minimal relay', COLORS.relay],
    ['evpub', COLORS.evpub],
    ...rates.slice(1).flatMap((rate) => [
      [`relay @${rate}/s`, '#9ecae9'],
      [`evpub @${rate}/s`, '#ffbf79'],
    ]),
  ]
    .map(([label, color], i, all) => {
      // Each entry as wide as its label (about 6.2 px a character at 11 px).
      const x = 20 + all.slice(0, i).reduce((sum, [l]) => sum + 32 + l!.length * 6.2, 0);
      return `<rect x="${x}" y="${height - 26}" width="12" height="12" fill="${color}"/><text x="${x + 16}" y="${height - 16}" font-size="11">${escape(label!)}</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + 20}" viewBox="0 0 ${width} ${height + 20}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${throughput}
${latency}
${legend}
<text x="${width - 10}" y="${height + 12}" text-anchor="end" font-size="10" fill="#666">${escape(
    `evpub CDC benchmark, ${report.date.slice(0, 10)}, ${report.machine.cpus}${
      ok.length > timed.length
        ? '; latency panel without ' +
          ok
            .filter((r) => r.note)
            .map((r) => r.broker)
            .join(', ') +
          ' (see notes)'
        : ''
    }`,
  )}</text>
</svg>
`;
}

/** `tsx bench/cdc/chart.ts bench/results/cdc-<date>.json`: draws the chart of a saved run again. */
if (require.main === module) {
  const file = process.argv[2]!;
  writeFileSync(
    file.replace(/\.json$/, '.svg'),
    renderChart(JSON.parse(readFileSync(file, 'utf8')) as Report),
  );
}
