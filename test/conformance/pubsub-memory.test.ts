import { pubsubConformance } from './pubsub.suite';

pubsubConformance({
  name: 'memory',
  url: async () => 'memory://conformance',
  networked: false,
});
