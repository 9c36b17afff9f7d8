/** The envelope names a model may configure (`models.<name>.envelope`). */
export type EnvelopeName = 'cloudevents' | 'cloudevents-binary' | 'legacy';
