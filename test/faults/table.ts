/**
 * Prints the fault matrix as a markdown table from the JSON lines the cases appended to
 * `EVPUB_FAULTS_REPORT` (see matrix.ts):
 *
 *   EVPUB_FAULTS_REPORT=/tmp/faults.jsonl npx vitest run test/faults
 *   npx tsx test/faults/table.ts /tmp/faults.jsonl
 */
import { readFileSync } from 'node:fs';
import { formatRow, TABLE_HEADER, type FaultRow } from './matrix';

const file = process.argv[2] ?? process.env.EVPUB_FAULTS_REPORT;
if (!file) {
  console.error('usage: tsx test/faults/table.ts <EVPUB_FAULTS_REPORT file>');
  process.exit(2);
}
const rows = readFileSync(file, 'utf8')
  .split('\n')
  .filter((line) => line.trim() !== '')
  .map((line) => JSON.parse(line) as FaultRow)
  .sort(
    (a, b) =>
      a.fault.localeCompare(b.fault) || a.source.localeCompare(b.source) || a.broker.localeCompare(b.broker),
  );
console.log(TABLE_HEADER);
for (const row of rows) console.log(formatRow(row));
