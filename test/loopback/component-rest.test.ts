/**
 * EvpubComponent in a RestApplication: the feeds run before the REST server serves (an observer
 * of LoopBack's `server` group sees evpub running) and stop after it; a controller injecting
 * EvpubBindings.CLIENT publishes to Mosquitto over a real HTTP request, and one injecting
 * EvpubBindings.STATUS serves evpub's status.
 */
import { CoreBindings, inject, lifeCycleObserver, type LifeCycleObserver } from '@loopback/core';
import { RepositoryMixin } from '@loopback/repository';
import { get, post, requestBody, RestApplication } from '@loopback/rest';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { App, AppStatus } from '../../src/app/app';
import { EvpubBindings, EvpubComponent } from '../../src/loopback/index';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('mosquitto');
});

class TestApp extends RepositoryMixin(RestApplication) {}

describe('EvpubComponent in a RestApplication', () => {
  it('starts the feeds before the server serves; controllers publish with CLIENT and read STATUS', async () => {
    const topic = `evpub/lbtest/${uniqueName('rest')}/notes`;
    const seen: string[] = [];

    /** Records, when the REST server's group starts and stops, what state evpub is in. */
    @lifeCycleObserver('server')
    class ServerGroupProbe implements LifeCycleObserver {
      constructor(@inject(EvpubBindings.APP) private readonly evpubApp: App) {}
      start(): void {
        seen.push(`server start: evpub ${this.evpubApp.state}`);
      }
      stop(): void {
        seen.push(`server stop: evpub ${this.evpubApp.state}`);
      }
    }

    class NotesController {
      constructor(
        @inject(EvpubBindings.CLIENT) private readonly client: Client,
        @inject(EvpubBindings.STATUS) private readonly status: AppStatus,
      ) {}

      @post('/notes', { responses: { '204': { description: 'published' } } })
      async create(
        @requestBody({ content: { 'application/json': { schema: { type: 'object' } } } })
        body: Record<string, unknown>,
      ): Promise<void> {
        await this.client.publish(topic, JSON.stringify(body));
      }

      @get('/evpub/status', { responses: { '200': { description: 'evpub status' } } })
      evpubStatus(): AppStatus {
        return this.status;
      }
    }

    const app = new TestApp({ rest: { host: '127.0.0.1', port: 0 } });
    app.component(EvpubComponent);
    app.configure(EvpubBindings.COMPONENT).to({
      brokers: { default: { url: SERVICES.mosquitto.url } },
      datasources: { mem: { connector: 'memory' } },
      models: { notes: { dataSource: 'mem' } },
      checkpoints: { store: 'memory' },
      logger: quietLogger(),
    });
    app.lifeCycleObserver(ServerGroupProbe);
    app.controller(NotesController);
    cleanups.push(() => app.stop());

    const sub = createClient(SERVICES.mosquitto.url, { logger: quietLogger() });
    cleanups.push(() => sub.end());
    const received: unknown[] = [];
    sub.on('message', (_t, payload) => received.push(JSON.parse(payload.toString())));
    await sub.subscribe(topic);

    await app.start();
    const registry = await app.get(CoreBindings.LIFE_CYCLE_OBSERVER_REGISTRY);
    const groups = registry.getObserverGroupsByOrder().map((g) => g.group);
    expect(groups.indexOf('evpub')).toBeLessThan(groups.indexOf('server'));

    const url = app.restServer.url!;
    const res = await fetch(`${url}/notes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'from REST' }),
    });
    expect(res.status).toBe(204);
    await waitFor(() => received.length === 1, 'the note on MQTT');
    expect(received[0]).toEqual({ text: 'from REST' });

    const status = (await (await fetch(`${url}/evpub/status`)).json()) as AppStatus;
    expect(status.state).toBe('running');
    expect(Object.keys(status.feeds)).toEqual(['mem/notes']);

    await app.stop();
    expect(seen).toEqual(['server start: evpub running', 'server stop: evpub running']);
    expect((await app.get(EvpubBindings.APP)).state).toBe('idle');
  });
});
