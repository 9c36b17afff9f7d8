/**
 * The handles the programmatic API returns: `app.dataSource()` gives a DataSource, whose
 * `connector` is set when the app starts (the connector `initialize()` made) and cleared when it
 * stops; `app.model()` gives a Model handle.
 */
import type { EventConnector } from '../connectors/contract';
import type { DataSourceConfig, ModelConfig } from './config-types';

export class DataSource<C = EventConnector> {
  /** The event connector, from `app.start()` until `app.stop()` resolves. */
  connector: C | undefined = undefined;

  constructor(
    readonly name: string,
    readonly settings: Readonly<DataSourceConfig>,
  ) {}
}

export interface Model {
  readonly name: string;
  readonly dataSource: string;
  readonly config: Readonly<ModelConfig>;
  /** `${datasource}/${model}`: the feed id, also the checkpoint's key. */
  readonly feedId: string;
}

/** What `app.model()` accepts as its first argument: a name, a LoopBack-style definition, or a model class. */
export type ModelDefinition =
  string | { name: string; base?: string; [key: string]: unknown } | { modelName: string };

export function modelName(def: ModelDefinition): string {
  if (typeof def === 'string') return def;
  if (def && typeof def === 'object') {
    if ('name' in def && typeof def.name === 'string') return def.name;
    if ('modelName' in def && typeof def.modelName === 'string') return def.modelName;
  }
  return '';
}

/** Options of `app.model()`: the model's ModelConfig, with `dataSource` also as a handle. */
export type ModelOptions = Omit<ModelConfig, 'dataSource'> & { dataSource: string | DataSource<unknown> };
