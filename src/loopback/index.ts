/**
 * `evpub/loopback`: evpub as a LoopBack 4 extension (docs/loopback.md). Needs the optional peer
 * dependencies `@loopback/core` (and `@loopback/repository` for models and repositories).
 */
export { EvpubBindings } from './keys';
export type { EvpubComponentConfig } from './types';
// Each part of the extension adds its exports below, one line per file.
export { EventPublishingRepositoryMixin } from './repository/mixin';
export type { EventPublishingOptions, EventPublishingMode } from './repository/context';
