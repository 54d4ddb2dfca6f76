// The live part of the page: one event stream for the whole page, each event handed to the
// view on screen, and redraws throttled (the stream may carry thousands of job events a
// second; the screen changes at most a few times a second).

import { EventStream } from './sse.js';

/** At most one redraw per this many milliseconds (about 4 a second). */
const REDRAW_MS = 250;

export class Live {
  /** `indicator` shows the stream's state; `onReset` reloads the view's data with plain GETs. */
  constructor(indicator, onReset) {
    this.indicator = indicator;
    this.onReset = onReset;
    this.view = null;
    this.state = 'closed';
    this.timer = null;
    this.lastDraw = 0;
    // A redraw replaces elements: one between a button's press and its release would eat the
    // click, so redraws wait while a pointer is down.
    this.pressed = false;
    this.deferred = false;
    document.addEventListener('pointerdown', () => {
      this.pressed = true;
    }, true);
    const released = () => {
      this.pressed = false;
      if (this.deferred) {
        this.deferred = false;
        setTimeout(() => this.redraw(), 0);
      }
    };
    document.addEventListener('pointerup', released, true);
    document.addEventListener('pointercancel', released, true);
    this.stream = new EventStream('v1/events', {
      onEvent: (type, data) => this.event(type, data),
      onState: (state) => this.setState(state),
    });
  }

  start() {
    this.stream.start();
  }

  /** Closes the stream (the page is going away: its connection is not kept open). */
  stop() {
    this.stream.stop();
  }

  /** Connects again (with a new token, after a 401). */
  restart() {
    this.stream.stop();
    this.stream = new EventStream('v1/events', {
      onEvent: (type, data) => this.event(type, data),
      onState: (state) => this.setState(state),
    });
    this.stream.start();
  }

  get open() {
    return this.state === 'open';
  }

  setState(state) {
    this.state = state;
    this.indicator.dataset.state = state === 'open' ? 'open' : 'closed';
    this.indicator.title = {
      open: 'live updates on',
      closed: 'live updates off: reconnecting',
      unauthorized: 'live updates off: no valid token',
      unavailable: 'live updates: not available on this server',
    }[state] || state;
  }

  /** The view now on screen (events go to it; null while none is). */
  show(view) {
    this.view = view;
  }

  event(type, data) {
    if (type === 'reset') {
      this.onReset();
      return;
    }
    const view = this.view;
    if (view && view.event && view.event(type, data)) this.redraw();
  }

  /** Draws the view again soon, at most once per REDRAW_MS however often asked. */
  redraw() {
    if (this.timer !== null) return;
    const wait = Math.max(0, this.lastDraw + REDRAW_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.pressed) {
        this.deferred = true;
        return;
      }
      this.lastDraw = Date.now();
      const view = this.view;
      if (view && view.ready) view.render();
    }, wait);
  }
}
