/**
 * The report host a binlog reader registers with (replica.ts): `evpub <host>:<pid> #<connection>`
 * within 60 bytes (MySQL 5.7's limit), the host name cut to fit, and read back.
 */
import { describe, expect, it } from 'vitest';
import { isDisplaced, parseReportHost, reportHost } from '../../src/connectors/mysql/replica';

describe('mysql replica report host', () => {
  it('names the host, the pid and the connection, and reads back', () => {
    const value = reportHost(57, 'web-1', 4242);
    expect(value).toBe('evpub web-1:4242 #57');
    expect(parseReportHost(value)).toEqual({ host: 'web-1', pid: 4242, connection: 57 });
  });

  it('a long or multi-byte host name is cut to 60 bytes, keeping pid and connection', () => {
    for (const host of ['h'.repeat(200), 'é'.repeat(100), `pod-${'x'.repeat(60)}.svc.cluster.local`]) {
      const value = reportHost(4_000_000_000, host, 4_194_304);
      expect(Buffer.byteLength(value)).toBeLessThanOrEqual(60);
      const parsed = parseReportHost(value)!;
      expect(parsed).toMatchObject({ pid: 4_194_304, connection: 4_000_000_000 });
      expect(host.startsWith(parsed.host)).toBe(true);
    }
  });

  it('another replica (not evpub) is not parsed', () => {
    expect(parseReportHost('10.0.0.7')).toBeUndefined();
    expect(parseReportHost('')).toBeUndefined();
  });

  it("the server's error for a reader displaced by another with its server id", () => {
    const message =
      "A slave with the same server_uuid/server_id is already connected; the first event 'mysql-bin.000002' at 371";
    expect(isDisplaced(new Error(message))).toBe(true);
    expect(isDisplaced(new Error('Could not find first log file name in binary log index file'))).toBe(false);
    expect(isDisplaced(undefined)).toBe(false);
  });
});
