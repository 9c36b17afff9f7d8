/**
 * The file store's writer thread: runs each checkpoint save (write the temporary file, fsync
 * it, rename it over the old one, fsync the directory) in a worker thread.
 *
 * Why a thread: a save is about eight file system calls done one after the other. On the main
 * thread each call's completion waits for the next turn of the event loop, and a busy
 * publisher's turn can handle a whole window of broker replies; a save then took eight turns
 * and the saved checkpoint fell thousands of events behind what the broker had accepted
 * (what a restart after a crash publishes again). The writer's own loop is idle, so a save
 * costs the main thread one message back, whatever the load.
 *
 * Protocol: the main thread posts `{ id, dir, target, tmp, text }`; the writer answers
 * `{ id }` once the new file is durable, or `{ id, error: { message, code } }` after removing
 * its temporary file. Jobs run concurrently (feeds are independent; saves of one feed come
 * one at a time from its tracker). The writer holds the process open only while a job is
 * pending. If it dies, pending saves fail (retriable) and the next save starts a new one.
 * The writer's code is plain JavaScript evaluated by the worker, so it runs the same from the
 * TypeScript sources and from the build.
 */
import { Worker } from 'node:worker_threads';

const WRITER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs/promises');
async function syncDir(dir) {
  let handle;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    // Some platforms cannot open or fsync a directory; there the rename is all we have.
    if (!['EISDIR', 'EPERM', 'EINVAL'].includes(err && err.code)) throw err;
  } finally {
    if (handle) await handle.close();
  }
}
async function save(job) {
  await fs.mkdir(job.dir, { recursive: true });
  const handle = await fs.open(job.tmp, 'w');
  try {
    await handle.writeFile(job.text, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(job.tmp, job.target);
  await syncDir(job.dir);
}
parentPort.on('message', (job) => {
  save(job).then(
    () => parentPort.postMessage({ id: job.id }),
    async (err) => {
      await fs.rm(job.tmp, { force: true }).catch(() => undefined);
      const code = err && typeof err.code === 'string' ? err.code : undefined;
      parentPort.postMessage({ id: job.id, error: { message: String(err && err.message), code } });
    },
  );
});
`;

export interface WriteJob {
  dir: string;
  target: string;
  tmp: string;
  text: string;
}

interface Reply {
  id: number;
  error?: { message: string; code?: string };
}

interface Pending {
  resolve(): void;
  reject(err: Error): void;
}

/** An error of the file system, as the writer reported it (`code` kept for the caller). */
function writerError(error: { message: string; code?: string }): Error {
  return Object.assign(new Error(error.message), error.code === undefined ? {} : { code: error.code });
}

export class FileWriter {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();

  /** Resolves once the job's file replaced the target durably; rejects with the cause. */
  write(job: WriteJob): Promise<void> {
    const worker = this.start();
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, ...job });
    });
  }

  /**
   * Starts the thread now (it takes tens of milliseconds), so that the first save does not
   * wait for it: the store calls this when a feed's checkpoint is loaded, before publishing.
   */
  warm(): void {
    this.start();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    // No execArgv: the writer needs none of the main thread's loaders (tsx), only node:fs.
    const worker = new Worker(WRITER_SOURCE, { eval: true, execArgv: [] });
    worker.unref();
    worker.on('message', (reply: Reply) => this.settle(reply));
    const lost = (err: Error): void => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      for (const job of this.pending.values()) job.reject(err);
      this.pending.clear();
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`the checkpoint writer thread exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private settle(reply: Reply): void {
    const job = this.pending.get(reply.id);
    if (!job) return;
    this.pending.delete(reply.id);
    if (this.pending.size === 0) this.worker?.unref();
    if (reply.error) job.reject(writerError(reply.error));
    else job.resolve();
  }

  /** Stops the thread; a save still pending fails. A later write starts a new thread. */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.worker = undefined;
    await worker.terminate();
    for (const job of this.pending.values()) job.reject(new Error('the checkpoint store was closed'));
    this.pending.clear();
  }
}
