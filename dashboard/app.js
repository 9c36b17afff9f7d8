/**
 * The evpub dashboard: an ES module run as is by the browser (no build step), with Preact + htm
 * and uPlot served by the management API from the installed packages (see src/http/dashboard.ts).
 *
 * - Feeds and brokers: `GET api/feeds` every 2 s; Pause / Resume: `POST api/feeds/<id>/pause`,
 *   then a refresh; Re-snapshot (feeds whose connector can: `canSnapshot`), after a confirm:
 *   `POST api/feeds/<id>/snapshot`. The throughput and lag charts are made of those polls (the
 *   last 5 minutes); the lag is each feed's `lag` (what its connector last reported: bytes,
 *   seconds), and a feed without one says so instead of showing an empty chart.
 * - Cluster mode (`cluster` in the feeds view): an Owner column (the instance publishing the feed,
 *   its lease's epoch and since when; "this instance" marked) and the cluster's line in the
 *   header; feeds another instance publishes are `standby`, without Pause / Re-snapshot (that
 *   instance's API does those).
 * - Live tail: `EventSource('api/events?model=…&topic=…')` (the server filters), and a text
 *   filter in the page; newest first, at most 200 rows; a click on a row shows the envelope
 *   pretty-printed.
 * - Token: when the API answers 401 the page asks for it, keeps it in localStorage, sends it as
 *   `Authorization: Bearer` on every fetch and as the `evpub_token` cookie for the EventSource
 *   (a browser cannot set a header on it).
 *
 * Every URL is relative to where the page is served, so it also works under a prefix.
 */
import { html, render, useEffect, useRef, useState } from './vendor/htm/preact/standalone.module.js';
import uPlot from './vendor/uplot/dist/uPlot.esm.js';

/** The root of the management API: the folder above this script. */
const ROOT = new URL('../', import.meta.url);
const POLL_MS = 2000;
const HISTORY = 150; // polls kept for the chart: 5 minutes
const TAIL_MAX = 200;
const TOKEN_KEY = 'evpub_token';
const COLOURS = ['#2f6fdd', '#1f9d55', '#d64545', '#c98a00', '#8e44ad', '#16a2b8', '#e67e22', '#6c757d'];

function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

/** Keeps the token for fetches (localStorage) and for the EventSource (a cookie on the API path). */
function saveToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // private mode: the token lives as long as the page
  }
  const path = ROOT.pathname;
  document.cookie = token
    ? `${TOKEN_KEY}=${encodeURIComponent(token)}; path=${path}; SameSite=Strict`
    : `${TOKEN_KEY}=; path=${path}; max-age=0; SameSite=Strict`;
}

class Unauthorized extends Error {}

/** A call to the API with the token; a 401 throws Unauthorized, any other failure an Error. */
async function api(path, token, init = {}) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const res = await fetch(new URL(path, ROOT), { ...init, headers });
  if (res.status === 401) throw new Unauthorized('the API wants a token');
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${res.status} ${body.message ?? body.error ?? res.statusText}`);
  return body;
}

function feedPath(id) {
  return `api/feeds/${id.split('/').map(encodeURIComponent).join('/')}`;
}

const number = new Intl.NumberFormat();
function rate(n) {
  return n >= 100 ? number.format(Math.round(n)) : n.toFixed(n >= 10 ? 1 : 2);
}

function State({ state }) {
  return html`<span class=${`state state-${state}`}>${state}</span>`;
}

function Snapshot({ snapshot }) {
  if (!snapshot) return null;
  const { done, total } = snapshot;
  const label = total
    ? `${number.format(done)} / ${number.format(total)} rows`
    : `${number.format(done)} rows`;
  return html`<div class="snapshot">
    <progress max=${total || 1} value=${total ? done : undefined}></progress>
    <span class="muted"> ${label}</span>
  </div>`;
}

/** Cluster mode: who publishes the feed, with its epoch and since when. */
function Owner({ owner }) {
  if (!owner) return html`<td data-owner=""><span class="muted">unowned</span></td>`;
  const since = new Date(owner.since);
  return html`<td data-owner=${owner.instance} data-mine=${owner.mine ? 'true' : 'false'}>
    <span class=${owner.mine ? 'owner owner-mine' : 'owner'}>${owner.instance}</span>
    ${owner.mine && html`<span class="muted"> (this instance)</span>`}
    <div class="muted">
      epoch ${owner.epoch}${Number.isNaN(since.getTime()) ? '' : `, since ${since.toLocaleTimeString()}`}
    </div>
  </td>`;
}

function FeedRow({ feed, busy, onAction, cluster }) {
  const here = feed.state !== 'standby';
  const canPause = here && !['paused', 'failed', 'stopped'].includes(feed.state);
  const canSnapshot =
    here && feed.canSnapshot && !['snapshotting', 'failed', 'stopped', 'starting'].includes(feed.state);
  return html`<tr data-feed=${feed.id} data-state=${feed.state}>
    <td>
      <div><b>${feed.id}</b></div>
      <div class="muted mono">${feed.broker} · ${feed.topic}</div>
      ${feed.error && html`<div class="error" data-error>${feed.error.code}: ${feed.error.message}</div>`}
      ${feed.pausedBy && html`<div class="muted">held by ${feed.pausedBy.join(', ')}</div>`}
    </td>
    <td><${State} state=${feed.state} /><${Snapshot} snapshot=${feed.snapshot} /></td>
    ${cluster && html`<${Owner} owner=${feed.owner} />`}
    <td class="num">${rate(feed.eventsPerSecond)}</td>
    <td class="num">${number.format(feed.counters.published)}</td>
    <td class="num">${number.format(feed.counters.deadLettered)}</td>
    <td class="num">${number.format(feed.inFlight)}</td>
    <td class="mono">${feed.position.committed ?? '—'}</td>
    <td>
      ${
        canPause
          ? html`<button disabled=${busy} onClick=${() => onAction(feed, 'pause')}>Pause</button>`
          : feed.state === 'paused'
            ? html`<button disabled=${busy} onClick=${() => onAction(feed, 'resume')}>Resume</button>`
            : null
      }
      ${
        canSnapshot &&
        html`<button
          disabled=${busy}
          title="Publish every row of the table again (snapshot events) while changes go on streaming"
          onClick=${() => onAction(feed, 'snapshot')}
        >
          Re-snapshot
        </button>`
      }
    </td>
  </tr>`;
}

function Feeds({ feeds, cluster, token, refresh, onError }) {
  const [busy, setBusy] = useState('');
  const onAction = async (feed, action) => {
    const ask = `Re-snapshot ${feed.id}? Every row of its table is published again as a snapshot event, while changes go on streaming.`;
    if (action === 'snapshot' && !window.confirm(ask)) return;
    setBusy(feed.id);
    try {
      await api(`${feedPath(feed.id)}/${action}`, token, { method: 'POST' });
    } catch (err) {
      onError(err);
    }
    setBusy('');
    refresh();
  };
  return html`<section>
    <h2>Feeds</h2>
    <table class="feeds">
      <thead>
        <tr>
          <th>Feed</th>
          <th>State</th>
          ${cluster && html`<th>Owner</th>`}
          <th class="num">Events/s</th>
          <th class="num">Published</th>
          <th class="num">Dead-lettered</th>
          <th class="num">In flight</th>
          <th>Committed position</th>
          <th></th>
        </tr>
      </thead>
      <tbody>
        ${feeds.map(
          (f) =>
            html`<${FeedRow}
              key=${f.id}
              feed=${f}
              cluster=${Boolean(cluster)}
              busy=${busy === f.id}
              onAction=${onAction}
            />`,
        )}
      </tbody>
    </table>
    ${feeds.length === 0 && html`<p class="muted">No feeds.</p>`}
  </section>`;
}

function Brokers({ brokers }) {
  return html`<section>
    <h2>Brokers</h2>
    <table class="brokers">
      <tbody>
        ${brokers.map(
          (b) =>
            html`<tr key=${b.name} data-broker=${b.name}>
              <td><b>${b.name}</b></td>
              <td>${b.adapter}</td>
              <td class="mono">${b.url}</td>
              <td><${State} state=${b.state} /></td>
            </tr>`,
        )}
      </tbody>
    </table>
  </section>`;
}

/** Bytes as text, 1024-based like Grafana's "bytes" unit: 0 B, 512 B, 1.5 KiB, 3.2 MiB... */
function bytesText(n) {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(v >= 10 ? 0 : 1)} ${units[i]}`;
}

function secondsText(n) {
  if (n == null) return '—';
  return n >= 100 ? `${number.format(Math.round(n))} s` : `${n.toFixed(n >= 10 ? 0 : 1)} s`;
}

/**
 * One uPlot chart of a series kept in `history` (`kind`), one line per feed that has a value in
 * it; `unit` labels the y axis and `format` its values and the legend's.
 */
function Chart({ history, kind, unit, format, name }) {
  const box = useRef(null);
  const chart = useRef(null);
  const ids = history.ids(kind);
  useEffect(() => {
    if (!box.current || ids.length === 0) return undefined;
    const width = () => Math.max(300, box.current.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: 200,
        scales: { x: { time: true } },
        axes: [{}, { label: unit, size: 70, values: (_u, splits) => splits.map((v) => format(v)) }],
        series: [
          {},
          ...ids.map((id, i) => ({
            label: id,
            stroke: COLOURS[i % COLOURS.length],
            width: 2,
            value: (_u, v) => format(v),
          })),
        ],
      },
      history.data(kind),
      box.current,
    );
    chart.current = plot;
    const onResize = () => plot.setSize({ width: width(), height: 200 });
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      plot.destroy();
      chart.current = null;
    };
  }, [ids.join('\n')]);
  useEffect(() => {
    chart.current?.setData(history.data(kind));
  });
  return html`<div class="chart" data-chart=${name} ref=${box}></div>`;
}

function Throughput({ history }) {
  return html`<section>
    <h2>Throughput <span class="muted">(events/s over the last minute, sampled every 2 s)</span></h2>
    <${Chart}
      history=${history}
      kind="rate"
      unit="events/s"
      format=${(v) => (v == null ? '—' : rate(v))}
      name="throughput"
    />
  </section>`;
}

/**
 * How far behind its source each feed's connector reads, as it reports it (`lag` of the feed's
 * view): a chart of bytes and one of seconds, each only when some feed reports it, and each
 * feed's last report, or that its connector reports none.
 */
function Lag({ history, feeds }) {
  const bytes = history.ids('lagBytes').length > 0;
  const seconds = history.ids('lagSeconds').length > 0;
  return html`<section>
    <h2>Source lag <span class="muted">(as the connectors report it, sampled every 2 s)</span></h2>
    ${bytes && html`<h3>Bytes of the source's log behind</h3>`}
    ${bytes && html`<${Chart} history=${history} kind="lagBytes" unit="bytes" format=${bytesText} name="lag-bytes" />`}
    ${seconds && html`<h3>Seconds behind</h3>`}
    ${seconds && html`<${Chart} history=${history} kind="lagSeconds" unit="seconds" format=${secondsText} name="lag-seconds" />`}
    <ul class="lag">
      ${feeds.map(
        (f) =>
          html`<li key=${f.id} data-lag=${f.id}>
            <b>${f.id}</b>${' '}
            ${
              f.lag
                ? html`<span class="mono"
                      >${[
                        f.lag.bytes !== undefined ? `${bytesText(f.lag.bytes)} behind` : '',
                        f.lag.seconds !== undefined ? secondsText(f.lag.seconds) : '',
                      ]
                        .filter(Boolean)
                        .join(' · ')}</span
                    >
                    <span class="muted"> (reported ${new Date(f.lag.at).toLocaleTimeString()})</span>`
                : html`<span class="muted">no lag reported by this connector</span>`
            }
          </li>`,
      )}
    </ul>
  </section>`;
}

/** What the charts show of a feed's view, by series kind. */
const SERIES = {
  rate: (f) => f.eventsPerSecond,
  lagBytes: (f) => f.lag?.bytes,
  lagSeconds: (f) => f.lag?.seconds,
};

/**
 * The polls, per feed, for the charts: events/s and the lag reported, the last `HISTORY`.
 * `ids(kind)`: the feeds with a value of that kind in the polls kept (events/s: every feed seen).
 */
function newHistory() {
  const times = [];
  const series = Object.fromEntries(Object.keys(SERIES).map((kind) => [kind, new Map()]));
  return {
    add(at, feeds) {
      times.push(at);
      for (const [kind, pick] of Object.entries(SERIES)) {
        const values = series[kind];
        for (const f of feeds) {
          if (!values.has(f.id)) values.set(f.id, new Array(times.length - 1).fill(null));
        }
        for (const [id, list] of values) {
          const f = feeds.find((x) => x.id === id);
          list.push(f ? (pick(f) ?? null) : null);
        }
      }
      if (times.length > HISTORY) {
        times.shift();
        for (const values of Object.values(series)) for (const list of values.values()) list.shift();
      }
    },
    ids(kind) {
      const ids = [...series[kind].keys()];
      return kind === 'rate' ? ids : ids.filter((id) => series[kind].get(id).some((v) => v !== null));
    },
    data(kind) {
      return [times.slice(), ...this.ids(kind).map((id) => series[kind].get(id).slice())];
    },
  };
}

/** What a tail row shows of an envelope: CloudEvents (type, subject) or legacy ({ model, message }). */
function summary(event) {
  const e = event.parsed;
  if (!e || typeof e !== 'object') return event.data.slice(0, 120);
  if (e.specversion) return `${e.type ?? ''}  ${e.subject ?? ''}`;
  if ('model' in e) return `${e.model}  ${e.message?._id ?? e.message?.id ?? ''}`;
  return event.data.slice(0, 120);
}

function TailRow({ event }) {
  const [open, setOpen] = useState(false);
  return html`<div class="tail-row" data-event-id=${event.id} onClick=${() => setOpen(!open)}>
    <span class="muted mono">${event.at}</span> <span class="mono">${summary(event)}</span>
    ${
      open &&
      html`<pre class="mono envelope">
${event.parsed ? JSON.stringify(event.parsed, null, 2) : event.data}</pre>`
    }
  </div>`;
}

/** Why the server closed the stream (a 400 for a bad topic pattern, a 401), asked once more. */
async function whyClosed(url, token) {
  const abort = new AbortController();
  try {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const res = await fetch(url, { headers, signal: abort.signal });
    if (res.ok) return 'closed';
    const body = await res.json().catch(() => ({}));
    return `closed: ${res.status} ${body.message ?? body.error ?? ''}`;
  } catch {
    return 'closed: the server cannot be reached';
  } finally {
    abort.abort();
  }
}

function Tail({ models, token }) {
  const [events, setEvents] = useState([]);
  const [model, setModel] = useState('');
  const [topic, setTopic] = useState('');
  const [topicDraft, setTopicDraft] = useState('');
  const [text, setText] = useState('');
  // The stream's state, with the filters of the stream it is about (a test, or a user, can tell
  // the new stream's "connected" from the old one's).
  const [status, setState] = useState({ text: 'connecting', model: '', topic: '' });
  useEffect(() => {
    const url = new URL('api/events', ROOT);
    if (model) url.searchParams.set('model', model);
    if (topic) url.searchParams.set('topic', topic);
    const source = new EventSource(url);
    let closed = false;
    const setStatus = (text) => setState({ text, model, topic });
    setStatus('connecting');
    source.onopen = () => setStatus('connected');
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return setStatus('reconnecting');
      void whyClosed(url, token).then((why) => closed || setStatus(why));
    };
    let seq = 0; // row keys: an event id may repeat (a redelivery) or be absent
    const onChange = (m) => {
      let parsed;
      try {
        parsed = JSON.parse(m.data);
      } catch {
        parsed = undefined;
      }
      const at = new Date().toLocaleTimeString();
      const event = { key: `${model}:${topic}:${seq++}`, id: m.lastEventId, data: m.data, parsed, at };
      setEvents((list) => [event, ...list].slice(0, TAIL_MAX));
    };
    const onGap = () => setStatus('connected (some events were missed)');
    source.addEventListener('change', onChange);
    source.addEventListener('gap', onGap);
    return () => {
      closed = true;
      source.close();
    };
  }, [model, topic]);
  const needle = text.trim().toLowerCase();
  const shown = needle ? events.filter((e) => e.data.toLowerCase().includes(needle)) : events;
  return html`<section>
    <h2>
      Live events${' '}
      <span class="muted" data-tail-status data-tail-model=${status.model} data-tail-topic=${status.topic}
        >${status.text}</span
      >
    </h2>
    <div class="filters">
      <select
        name="model"
        onChange=${(e) => {
          setEvents([]);
          setModel(e.target.value);
        }}
      >
        <option value="">every model</option>
        ${models.map((m) => html`<option value=${m} selected=${m === model}>${m}</option>`)}
      </select>
      <form
        onSubmit=${(e) => {
          e.preventDefault();
          setEvents([]);
          setTopic(topicDraft.trim());
        }}
      >
        <input
          name="topic"
          class="topic"
          placeholder="topic pattern: orders/+/# (Enter)"
          value=${topicDraft}
          onInput=${(e) => setTopicDraft(e.target.value)}
        />
      </form>
      <input
        name="filter"
        type="search"
        placeholder="filter: any text of the event"
        value=${text}
        onInput=${(e) => setText(e.target.value)}
      />
      <span class="muted">${shown.length} of ${events.length} shown (newest first, last ${TAIL_MAX})</span>
    </div>
    <div class="tail">${shown.map((e) => html`<${TailRow} key=${e.key} event=${e} />`)}</div>
  </section>`;
}

function TokenPrompt({ wrong, onToken }) {
  const [value, setValue] = useState('');
  return html`<section class="token">
    <h2>Token</h2>
    <p>
      ${wrong ? 'That token was refused. ' : ''}This evpub API needs its token (http.token or
      EVPUB_HTTP_TOKEN).
    </p>
    <form
      onSubmit=${(e) => {
        e.preventDefault();
        onToken(value.trim());
      }}
    >
      <input
        name="token"
        type="password"
        autocomplete="current-password"
        value=${value}
        onInput=${(e) => setValue(e.target.value)}
      />
      <button type="submit">Open</button>
    </form>
  </section>`;
}

function App() {
  const [token, setToken] = useState(storedToken);
  const [view, setView] = useState(null);
  const [auth, setAuth] = useState('unknown'); // unknown | ok | needed | wrong
  const [error, setError] = useState('');
  const [tick, setTick] = useState(0);
  const history = useRef(newHistory());

  useEffect(() => {
    let stopped = false;
    const poll = async () => {
      try {
        const next = await api('api/feeds', token);
        if (stopped) return;
        history.current.add(Date.now() / 1000, next.feeds);
        setView(next);
        setAuth('ok');
        setError('');
      } catch (err) {
        if (stopped) return;
        if (err instanceof Unauthorized) setAuth(token ? 'wrong' : 'needed');
        else setError(`Cannot reach the API: ${err.message}`);
      }
    };
    void poll();
    const timer = setInterval(() => void poll(), POLL_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [token, tick]);

  const onToken = (value) => {
    saveToken(value);
    setAuth('unknown');
    setToken(value);
  };
  if (auth === 'needed' || auth === 'wrong') {
    return html`<${TokenPrompt} wrong=${auth === 'wrong'} onToken=${onToken} />`;
  }
  const feeds = view?.feeds ?? [];
  const models = [...new Set(feeds.map((f) => f.model))].sort();
  return html`<header>
      <h1>evpub</h1>
      <span class="muted">${view ? `${view.state}, started ${view.startedAt ?? '—'}` : 'loading…'}</span>
      ${
        view?.cluster &&
        html`<span class="muted" data-cluster=${view.cluster.state}>
          ${`· cluster ${view.cluster.name}, instance ${view.cluster.instance}, lease store ${view.cluster.store}: `}
          <span class=${`state state-${view.cluster.state === 'ok' ? 'connected' : 'unreachable'}`}
            >${view.cluster.state}</span
          >
        </span>`
      }
      ${token && html`<button onClick=${() => onToken('')}>Forget token</button>`}
    </header>
    ${error && html`<div class="error" data-api-error>${error}</div>`}
    ${
      view &&
      html`<${Feeds}
          feeds=${feeds}
          cluster=${view.cluster}
          token=${token}
          refresh=${() => setTick((t) => t + 1)}
          onError=${(e) => setError(e.message)}
        />
        <${Throughput} history=${history.current} />
        <${Lag} history=${history.current} feeds=${feeds} />
        <${Brokers} brokers=${view.brokers} />
        <${Tail} key=${token} models=${models} token=${token} />`
    }`;
}

saveToken(storedToken());
const root = document.getElementById('root');
root.textContent = ''; // the "Loading" line: render() keeps what it did not make
render(html`<${App} />`, root);
