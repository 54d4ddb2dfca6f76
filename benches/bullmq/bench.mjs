// BullMQ throughput baseline for jobyard.
//
// Phase "add":     enqueue N no-op jobs with Queue.addBulk, in chunks.
// Phase "process": one Worker at the given concurrency drains them; its
//                  processor returns at once, so this measures queue overhead.
//
// Redis command stats are reset before each phase and read after it, so the
// Redis time spent in Lua scripts (EVAL/EVALSHA) per job can be compared with
// jobyard's own scripts.
//
// Usage: REDIS_URL=redis://127.0.0.1:6379 node bench.mjs [--jobs N] [--concurrency N] [--chunk N]
// The Redis server should be a private one: CONFIG RESETSTAT clears its stats.

import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

function parseArgs(argv) {
  const opts = { jobs: 100_000, concurrency: 100, chunk: 1000 };
  for (let i = 0; i < argv.length; i++) {
    let [key, value] = argv[i].split('=', 2);
    if (!key.startsWith('--')) throw new Error(`unexpected argument: ${argv[i]}`);
    key = key.slice(2);
    if (!(key in opts)) throw new Error(`unknown option: --${key}`);
    if (value === undefined) value = argv[++i];
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${key} needs a positive integer, got ${value}`);
    opts[key] = n;
  }
  return opts;
}

// ioredis only reads a URL when it is given as a string, and BullMQ wants an
// options object (it makes its own connections), so split the URL here.
function connectionFromUrl(raw) {
  const url = new URL(raw);
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new Error(`REDIS_URL must be redis:// or rediss://, got ${raw}`);
  }
  const conn = {
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 6379,
  };
  if (url.username) conn.username = decodeURIComponent(url.username);
  if (url.password) conn.password = decodeURIComponent(url.password);
  const db = url.pathname.replace(/^\//, '');
  if (db) conn.db = Number(db);
  if (url.protocol === 'rediss:') conn.tls = {};
  return conn;
}

// INFO commandstats lines look like
//   cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,rejected_calls=0,failed_calls=0
function parseCommandStats(text) {
  const stats = new Map();
  for (const line of text.split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):(.*)$/.exec(line);
    if (!m) continue;
    const fields = {};
    for (const kv of m[2].split(',')) {
      const [k, v] = kv.split('=');
      fields[k] = Number(v);
    }
    stats.set(m[1], fields);
  }
  return stats;
}

function parseCpu(text) {
  const get = (name) => Number((new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text) || [])[1] || 0);
  return get('used_cpu_user') + get('used_cpu_sys');
}

async function resetStats(client) {
  await client.config('RESETSTAT');
  return parseCpu(await client.info('cpu'));
}

async function reportStats(client, label, jobs, cpuBefore) {
  const stats = parseCommandStats(await client.info('commandstats'));
  const cpuSeconds = parseCpu(await client.info('cpu')) - cpuBefore;
  // The bench's own INFO and CONFIG RESETSTAT calls are not part of the work.
  stats.delete('info');
  stats.delete('config');
  let scriptUsec = 0;
  let scriptCalls = 0;
  let totalCalls = 0;
  for (const [name, s] of stats) {
    totalCalls += s.calls;
    if (name === 'evalsha' || name === 'eval' || name === 'evalsha_ro' || name === 'eval_ro') {
      scriptUsec += s.usec;
      scriptCalls += s.calls;
    }
  }
  console.log(`redis script µs per job (${label}): ${(scriptUsec / jobs).toFixed(2)}` +
    `  (${scriptCalls} script calls, ${(scriptCalls / jobs).toFixed(3)} per job)`);
  console.log(`redis command calls per job (${label}): ${(totalCalls / jobs).toFixed(2)}` +
    `  (all commands, including those run inside scripts)`);
  console.log(`redis CPU µs per job (${label}): ${((cpuSeconds * 1e6) / jobs).toFixed(2)}` +
    `  (used_cpu_user+sys, whole server)`);
  const top = [...stats].sort((a, b) => b[1].calls - a[1].calls).slice(0, 8);
  console.log(`  top commands (${label}): ` +
    top.map(([n, s]) => `${n}=${(s.calls / jobs).toFixed(2)}/job`).join(' '));
  return { scriptUsecPerJob: scriptUsec / jobs, callsPerJob: totalCalls / jobs, cpuUsecPerJob: (cpuSeconds * 1e6) / jobs };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const connection = connectionFromUrl(redisUrl);
  const queueName = `bench-${Date.now()}`;

  console.log(`bullmq ${BULLMQ_VERSION}, node ${process.version}`);
  console.log(`redis ${redisUrl}, queue ${queueName}, jobs ${opts.jobs}, concurrency ${opts.concurrency}, chunk ${opts.chunk}`);

  const queue = new Queue(queueName, { connection });
  const client = await queue.client;
  let worker;

  try {
    // Phase 1: add.
    let cpuBefore = await resetStats(client);
    const jobOpts = { removeOnComplete: true, removeOnFail: true };
    const addStart = performance.now();
    for (let added = 0; added < opts.jobs; added += opts.chunk) {
      const n = Math.min(opts.chunk, opts.jobs - added);
      const batch = new Array(n);
      for (let i = 0; i < n; i++) batch[i] = { name: 'noop', data: {}, opts: jobOpts };
      await queue.addBulk(batch);
    }
    const addSeconds = (performance.now() - addStart) / 1000;
    const addStats = await reportStats(client, 'add', opts.jobs, cpuBefore);
    console.log(`added: ${opts.jobs} jobs in ${addSeconds.toFixed(3)} s`);
    console.log(`add throughput: ${Math.round(opts.jobs / addSeconds)} jobs/s`);

    const waiting = await queue.getWaitingCount();
    if (waiting !== opts.jobs) throw new Error(`expected ${opts.jobs} waiting jobs, found ${waiting}`);

    // Phase 2: process.
    worker = new Worker(queueName, async () => null, {
      connection,
      concurrency: opts.concurrency,
      autorun: false,
    });
    await worker.waitUntilReady();

    let completed = 0;
    let failed = 0;
    let lastProgress = performance.now();
    const done = new Promise((resolve, reject) => {
      const check = () => {
        lastProgress = performance.now();
        if (completed + failed >= opts.jobs) resolve();
      };
      worker.on('completed', () => { completed++; check(); });
      worker.on('failed', () => { failed++; check(); });
      worker.on('error', reject);
      // Give up if nothing finishes for 60 s, so a broken run cannot hang.
      const stall = setInterval(() => {
        if (performance.now() - lastProgress > 60_000) {
          reject(new Error(`stalled: ${completed} completed, ${failed} failed of ${opts.jobs}`));
        }
      }, 1000);
      stall.unref();
    });

    cpuBefore = await resetStats(client);
    const processStart = performance.now();
    const running = worker.run();
    await done;
    const processSeconds = (performance.now() - processStart) / 1000;
    const processStats = await reportStats(client, 'processing', opts.jobs, cpuBefore);
    if (failed > 0) console.log(`failed: ${failed} jobs`);
    console.log(`processed: ${completed} jobs in ${processSeconds.toFixed(3)} s`);
    console.log(`throughput: ${Math.round(completed / processSeconds)} jobs/s`);

    await worker.close();
    await running;
    worker = undefined;

    console.log('RESULT ' + JSON.stringify({
      bullmq: BULLMQ_VERSION,
      jobs: opts.jobs,
      concurrency: opts.concurrency,
      addSeconds,
      addJobsPerSec: opts.jobs / addSeconds,
      processSeconds,
      jobsPerSec: completed / processSeconds,
      failed,
      add: addStats,
      processing: processStats,
    }));
    if (failed > 0) process.exitCode = 1;
  } finally {
    if (worker) await worker.close(true).catch(() => {});
    await queue.obliterate({ force: true }).catch((e) => console.error(`obliterate failed: ${e.message}`));
    await queue.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
