/**
 * The app's hub of published events: what the pipelines' `onPublished` taps hand over, fanned
 * out to in-process listeners (the HTTP event stream's ring, a test, an embedding application).
 *
 * Protocol:
 * - `on('event', listener)` / `off('event', listener)`; a listener is called synchronously, on
 *   the pipeline's path, once per event the broker confirmed (dead letters are not events of a
 *   feed and are not passed). It must be quick and must not keep the payload unless it bounds
 *   what it keeps: the payload buffer is the one published.
 * - A listener that throws is logged; the other listeners and the pipeline go on.
 * - With no listener, `publish` returns at once (one branch per event).
 * - The hub lives as long as the app: listeners stay across `stop()` and a later `start()`.
 */
import { toError } from '../errors';
import type { Logger } from '../logger';
import type { PublishedEvent } from '../pipeline/pipeline';

export type { PublishedEvent } from '../pipeline/pipeline';

export type PublishedListener = (event: PublishedEvent) => void;

/** What `app.events()` gives: subscribe to and unsubscribe from published events. */
export interface PublishedEventSource {
  on(type: 'event', listener: PublishedListener): this;
  off(type: 'event', listener: PublishedListener): this;
}

export class PublishedEvents implements PublishedEventSource {
  private readonly listeners = new Set<PublishedListener>();

  constructor(private readonly logger: Logger) {}

  on(_type: 'event', listener: PublishedListener): this {
    this.listeners.add(listener);
    return this;
  }

  off(_type: 'event', listener: PublishedListener): this {
    this.listeners.delete(listener);
    return this;
  }

  listenerCount(): number {
    return this.listeners.size;
  }

  /** The runtime's tap: hands `event` to every listener. */
  publish(event: PublishedEvent): void {
    if (this.listeners.size === 0) return;
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.logger.error(
          { err: toError(err), feed: event.feed, eventId: event.eventId },
          'a published-event listener threw; the event is published all the same',
        );
      }
    }
  }
}
