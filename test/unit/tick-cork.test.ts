import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { TickCork } from '../../src/util/tick-cork';

const tick = (): Promise<void> => new Promise((r) => process.nextTick(r));

describe('TickCork', () => {
  it("holds a tick's writes and lets them go, in order, in one chunk, when the tick ends", async () => {
    const socket = new PassThrough();
    // What reaches the socket's writev (a net.Socket: one syscall per call).
    const chunks: string[] = [];
    let writes = 0;
    socket._writev = (batch, cb) => {
      writes++;
      chunks.push(batch.map((b) => String(b.chunk)).join(''));
      cb();
    };
    const cork = new TickCork();
    for (const s of ['a', 'b', 'c']) {
      cork.hold(socket);
      socket.write(s);
    }
    expect(socket.writableCorked).toBe(1); // held once, however many writes
    expect(writes).toBe(0);
    await tick();
    expect(socket.writableCorked).toBe(0);
    expect(writes).toBe(1);
    expect(chunks).toEqual(['abc']);
  });

  it('a second socket in the same tick releases the first at once, and both are released', async () => {
    const first = new PassThrough();
    const second = new PassThrough();
    const cork = new TickCork();
    cork.hold(first);
    first.write('1');
    cork.hold(second);
    expect(first.writableCorked).toBe(0);
    expect(String(first.read())).toBe('1');
    expect(second.writableCorked).toBe(1);
    await tick();
    expect(second.writableCorked).toBe(0);
    cork.hold(first); // a new tick holds again
    expect(first.writableCorked).toBe(1);
    await tick();
    expect(first.writableCorked).toBe(0);
  });
});
