/** Runs `send(i)` for i < n with at most `window` unsettled; resolves when all settled. */
export async function windowed(
  n: number,
  window: number,
  send: (i: number) => Promise<unknown>,
): Promise<void> {
  let inflight = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const settle = (): void => {
    inflight--;
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (err: unknown): void => {
    failure ??= err instanceof Error ? err : new Error(String(err));
    settle();
  };
  for (let i = 0; i < n; i++) {
    while (inflight >= window) await new Promise<void>((r) => (wake = r));
    if (failure) throw failure;
    inflight++;
    send(i).then(settle, fail);
  }
  while (inflight > 0) await new Promise<void>((r) => (wake = r));
  if (failure) throw failure;
}
