/** The Redis checkpoint store unreachable mid-stream: see checkpoint-store-down.ts. */
import { checkpointStoreDownCase } from './checkpoint-store-down';

checkpointStoreDownCase('redis');
