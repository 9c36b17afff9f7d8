/**
 * Holds a socket's writes until the end of the current tick, so that what one tick writes leaves
 * in one writev instead of a syscall per write: the client libraries write each command (ioredis)
 * or frame set (amqplib) to the socket as it comes, and a write syscall per publish was a quarter
 * to a third of evpub's CPU in a burst. Latency is unchanged: the writes still leave before the
 * event loop waits for I/O. Back-pressure is kept: a held write past the high-water mark returns
 * false, and 'drain' follows the release.
 *
 * One per connection owner (an adapter); `hold()` costs one comparison after the first call of a
 * tick. A different socket in the same tick (a reconnect) releases the first one at once.
 */
import type { Writable } from 'node:stream';

export class TickCork {
  private held: Writable | undefined;
  private readonly release = (): void => {
    const socket = this.held;
    this.held = undefined;
    socket?.uncork();
  };

  hold(socket: Writable): void {
    if (this.held === socket) return;
    if (this.held) this.held.uncork();
    else process.nextTick(this.release);
    this.held = socket;
    socket.cork();
  }
}
