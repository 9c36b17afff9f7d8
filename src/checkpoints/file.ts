/**
 * The file checkpoint store (the default): one small JSON file per feed in a directory
 * (default `.evpub/checkpoints` under the working directory).
 *
 * The file for feed `db/accounts` is `<dir>/<encodeURIComponent(feedId)>.json` holding
 * `{"feed":"db/accounts","position":"...","savedAt":"..."}`. A save writes a temporary file
 * next to it, fsyncs it, renames it over the old one and fsyncs the directory: rename is atomic
 * on POSIX file systems, so after a crash at any moment the file holds the old or the new
 * position, never a torn one. Leftover temporary files of a crashed save are ignored. Saves
 * run in a writer thread (file-writer.ts): on a busy event loop the eight calls of a save, one
 * turn each, made the saved checkpoint lag far behind what the broker had accepted.
 *
 * Claims (contract.ts): `<feed file>.owner` holds the owner as JSON, created with O_EXCL (`wx`);
 * one left by a process of this host that is no longer alive is stale and taken over.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ErrorCode, EvpubError } from '../errors';
import type { Position } from '../events/change-event';
import {
  cannotFence,
  claimEach,
  ownedElsewhere,
  ownerGone,
  type CheckpointStore,
  type FeedClaim,
  type FeedOwner,
  type SaveOptions,
} from './contract';
import { hostname } from 'node:os';
import { FileWriter } from './file-writer';

export const DEFAULT_CHECKPOINT_DIR = '.evpub/checkpoints';

interface CheckpointFile {
  feed: string;
  position: Position;
  savedAt: string;
}

function failed(message: string, cause: unknown, feedId: string): EvpubError {
  const code = (cause as { code?: string }).code;
  return new EvpubError(ErrorCode.CHECKPOINT_FAILED, message, {
    cause,
    retriable: code !== 'EACCES' && code !== 'EROFS' && code !== 'ENOTDIR',
    context: { feed: feedId, store: 'file' },
  });
}

export class FileCheckpointStore implements CheckpointStore {
  readonly name = 'file';
  /** A file on one machine: no fencing (src/checkpoints/contract.ts). */
  readonly fencing = false;
  readonly dir: string;
  /** Runs the saves off the main thread (see file-writer.ts). */
  private readonly writer = new FileWriter();

  constructor(options: { path?: string; cwd?: string } = {}) {
    this.dir = path.resolve(options.cwd ?? process.cwd(), options.path ?? DEFAULT_CHECKPOINT_DIR);
  }

  fileOf(feedId: string): string {
    return path.join(this.dir, `${encodeURIComponent(feedId)}.json`);
  }

  ownerFileOf(feedId: string): string {
    return `${this.fileOf(feedId)}.owner`;
  }

  async claim(feedIds: readonly string[], owner: FeedOwner): Promise<FeedClaim> {
    try {
      await fs.mkdir(this.dir, { recursive: true });
    } catch (err) {
      throw failed(`cannot create the checkpoint directory ${this.dir}`, err, feedIds[0] ?? '');
    }
    return claimEach(feedIds, (feedId) => this.claimOne(feedId, owner));
  }

  private async claimOne(feedId: string, owner: FeedOwner): Promise<() => Promise<void>> {
    const file = this.ownerFileOf(feedId);
    const release = async (): Promise<void> => {
      const held = await readOwner(file);
      if (held?.instance === owner.instance) await fs.rm(file, { force: true });
    };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await fs.writeFile(file, JSON.stringify(owner), { flag: 'wx' });
        return release;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') {
          throw failed(`cannot write the owner file ${file}`, err, feedId);
        }
      }
      const held = await readOwner(file);
      if (held && !ownerGone(held)) {
        throw ownedElsewhere(
          feedId,
          held,
          'file',
          held.hostname !== hostname()
            ? ` (or, if no evpub runs on ${held.hostname} any more, delete ${file})`
            : '',
        );
      }
      // Stale (its process is gone) or unreadable (a crash while writing it): take it over.
      await fs.rm(file, { force: true });
    }
    throw ownedElsewhere(feedId, (await readOwner(file)) ?? {}, 'file');
  }

  async load(feedId: string): Promise<Position | undefined> {
    this.writer.warm(); // saves follow a load: start the writer thread meanwhile
    let text: string;
    try {
      text = await fs.readFile(this.fileOf(feedId), 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw failed(`cannot read the checkpoint of ${feedId} in ${this.dir}`, err, feedId);
    }
    try {
      const parsed = JSON.parse(text) as Partial<CheckpointFile>;
      if (typeof parsed.position !== 'string') throw new Error('no "position" string');
      return parsed.position;
    } catch (err) {
      throw new EvpubError(
        ErrorCode.CHECKPOINT_FAILED,
        `the checkpoint file ${this.fileOf(feedId)} is not valid; delete it to start the feed over`,
        { cause: err, context: { feed: feedId, store: 'file' } },
      );
    }
  }

  async save(feedId: string, position: Position, options?: SaveOptions): Promise<void> {
    if (options?.fence) cannotFence(this.name);
    const target = this.fileOf(feedId);
    const tmp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const body: CheckpointFile = { feed: feedId, position, savedAt: new Date().toISOString() };
    try {
      await this.writer.write({ dir: this.dir, target, tmp, text: JSON.stringify(body) + '\n' });
    } catch (err) {
      throw failed(`cannot save the checkpoint of ${feedId} in ${this.dir}`, err, feedId);
    }
  }

  async delete(feedId: string): Promise<void> {
    try {
      await fs.rm(this.fileOf(feedId), { force: true });
    } catch (err) {
      throw failed(`cannot delete the checkpoint of ${feedId}`, err, feedId);
    }
  }

  async close(): Promise<void> {
    await this.writer.close();
  }
}

async function readOwner(file: string): Promise<Partial<FeedOwner> | undefined> {
  try {
    const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as Partial<FeedOwner>;
    return typeof parsed === 'object' && parsed !== null ? parsed : undefined;
  } catch {
    return undefined;
  }
}
