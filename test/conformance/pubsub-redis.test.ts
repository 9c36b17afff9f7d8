import { ErrorCode } from '../../src/pubsub/index';
import { requireService, uniqueName } from '../helpers/services';
import { startRedisServer } from '../helpers/redis-server';
import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'redis (pub/sub mode)',
  url: () => requireService('redis'),
  privateBroker: () => startRedisServer(),
  refusals: [
    {
      what: 'a channel the ACL user may not publish to (NOPERM)',
      code: ErrorCode.NOT_AUTHORIZED,
      retriable: false,
      async setup() {
        const base = `evpub/test/${uniqueName()}`;
        const allowed = `${base}/orders`;
        const server = await startRedisServer({
          args: ['--user', 'evpub', 'on', '>secret', `~${allowed}`, `&${allowed}`, '+@all'],
        });
        return {
          url: server.url.replace('redis://', 'redis://evpub:secret@'),
          refused: `${base}/vip`,
          allowed,
          brokerReason: /^NOPERM .*channels/,
          brokerCode: 'NOPERM',
          cleanup: () => server.close(),
        };
      },
    },
  ],
  refusalsNotProduced: [
    'a script or function refusing the command: evpub publishes with PUBLISH, which no script runs',
  ],
});
