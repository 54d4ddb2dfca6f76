// Server-sent events read with fetch() (EventSource cannot send the bearer token): a small
// parser of the text/event-stream format, and reconnection that resumes from the last event
// id seen (the server answers with a `reset` event when it cannot).

import { answer, headers, url } from './api.js';

/** No byte for this long (the server sends a comment every 15 s): the connection is dead. */
const SILENCE_MS = 45000;
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 15000;

export class EventStream {
  /**
   * `onEvent(type, data, id)` gets each event with its data parsed as JSON; `onState(state)`
   * gets `open`, `closed`, `unauthorized` or `unavailable` (the server has no such stream).
   */
  constructor(path, { onEvent, onState }) {
    this.path = path;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.running = false;
    this.controller = null;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop().catch(() => this.onState('closed'));
  }

  stop() {
    this.running = false;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let delay = FIRST_DELAY_MS;
    while (this.running) {
      const outcome = await this.connect(() => {
        delay = FIRST_DELAY_MS;
      });
      if (!this.running) return;
      if (outcome === 'unavailable' || outcome === 'unauthorized') {
        this.running = false;
        this.onState(outcome);
        return;
      }
      this.onState('closed');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  /** One connection, read to its end: what ended it. */
  async connect(opened) {
    const controller = new AbortController();
    this.controller = controller;
    const extra = { Accept: 'text/event-stream' };
    if (this.lastId !== null) extra['Last-Event-ID'] = this.lastId;
    let response;
    try {
      response = await fetch(url(this.path), { headers: headers(extra), signal: controller.signal, cache: 'no-store' });
    } catch {
      return 'failed';
    }
    if (!response.ok) {
      try {
        await answer(response);
      } catch {
        // The status says it all.
      }
      if (response.status === 404) return 'unavailable';
      if (response.status === 401) return 'unauthorized';
      return 'failed';
    }
    if (!response.body) return 'unavailable';
    opened();
    this.onState('open');
    try {
      await this.read(response.body.getReader(), controller);
    } catch {
      // A dropped connection or our own abort: reconnect (or stop) below.
    }
    return 'ended';
  }

  async read(reader, controller) {
    const decoder = new TextDecoder();
    let buffer = '';
    let event = { type: '', data: [], id: null };
    let heard = Date.now();
    const watchdog = setInterval(() => {
      if (Date.now() - heard > SILENCE_MS) controller.abort();
    }, SILENCE_MS / 3);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        heard = Date.now();
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        let end;
        while ((end = buffer.indexOf('\n', start)) >= 0) {
          let line = buffer.slice(start, end);
          start = end + 1;
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {
            this.dispatch(event);
            event = { type: '', data: [], id: null };
          } else {
            field(event, line);
          }
        }
        buffer = buffer.slice(start);
      }
    } finally {
      clearInterval(watchdog);
    }
  }

  dispatch(event) {
    if (event.id !== null) this.lastId = event.id;
    if (event.data.length === 0) return;
    let data;
    try {
      data = JSON.parse(event.data.join('\n'));
    } catch {
      return;
    }
    this.onEvent(event.type || 'message', data, event.id);
  }
}

/** Applies one `name: value` line to the event being read (comments start with `:`). */
function field(event, line) {
  if (line.startsWith(':')) return;
  const colon = line.indexOf(':');
  const name = colon < 0 ? line : line.slice(0, colon);
  let value = colon < 0 ? '' : line.slice(colon + 1);
  if (value.startsWith(' ')) value = value.slice(1);
  if (name === 'event') event.type = value;
  else if (name === 'data') event.data.push(value);
  else if (name === 'id' && !value.includes('\0')) event.id = value;
}
