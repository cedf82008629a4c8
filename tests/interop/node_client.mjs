// Node BullMQ side of the interoperability tests. Usage:
//   node node_client.mjs <redisUrl> <queue> add '<json [{name,data,opts}]>'   -> prints job ids
//   node node_client.mjs <redisUrl> <queue> listen <jobId,...> <timeoutMs>    -> prints QueueEvents as JSON lines
//   node node_client.mjs <redisUrl> <queue> inspect <jobId,...>                -> prints getJob fields + state
//   node node_client.mjs <redisUrl> <queue> workers                            -> prints getWorkers() names
//   node node_client.mjs <redisUrl> <queue> consume <count> <timeoutMs>        -> a Node Worker processes jobs
//   node node_client.mjs <redisUrl> <queue> states <jobId,...>                 -> prints {id: getState() or null}
//   node node_client.mjs <redisUrl> <queue> ispaused                           -> prints isPaused()
import { Queue, QueueEvents, Worker } from 'bullmq';

const [redisUrl, queueName, command, ...args] = process.argv.slice(2);
const url = new URL(redisUrl);
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number((url.pathname || '/0').slice(1) || 0) };

async function add(queue) {
  const ids = [];
  for (const job of JSON.parse(args[0])) {
    const added = await queue.add(job.name, job.data, job.opts);
    ids.push(added.id);
  }
  console.log(JSON.stringify(ids));
}

async function listen() {
  const wanted = new Set(args[0].split(','));
  const timeoutMs = Number(args[1] || 20000);
  const events = new QueueEvents(queueName, { connection });
  await events.waitUntilReady();
  const done = new Set();
  const emit = (type, payload) => console.log(JSON.stringify({ type, ...payload }));
  const finished = new Promise((resolve) => {
    const finish = (jobId) => { done.add(jobId); if ([...wanted].every((id) => done.has(id))) resolve(); };
    events.on('progress', ({ jobId, data }) => emit('progress', { jobId, data }));
    events.on('active', ({ jobId }) => emit('active', { jobId }));
    events.on('completed', ({ jobId, returnvalue }) => { emit('completed', { jobId, returnvalue }); finish(jobId); });
    events.on('failed', ({ jobId, failedReason }) => { emit('failed', { jobId, failedReason }); finish(jobId); });
  });
  console.log(JSON.stringify({ type: 'ready' }));
  await Promise.race([finished, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  // close() waits out the blocking XREAD (up to 10 s); pipes are synchronous on Linux, so exit now.
  process.exit(0);
}

async function inspect(queue) {
  const out = {};
  for (const id of args[0].split(',')) {
    const job = await queue.getJob(id);
    out[id] = job && {
      name: job.name, data: job.data, progress: job.progress, returnvalue: job.returnvalue,
      attemptsMade: job.attemptsMade, processedOn: job.processedOn, finishedOn: job.finishedOn,
      failedReason: job.failedReason, timestamp: job.timestamp, state: await job.getState(),
      processedBy: job.processedBy, logs: (await queue.getJobLogs(id)).logs,
    };
  }
  console.log(JSON.stringify(out));
}

async function workers(queue) {
  const list = await queue.getWorkers();
  console.log(JSON.stringify({ names: list.map((w) => w.rawname), count: await queue.getWorkersCount() }));
}

async function consume() {
  const wanted = Number(args[0]);
  const timeoutMs = Number(args[1] || 20000);
  const seen = [];
  let resolveAll;
  const all = new Promise((resolve) => { resolveAll = resolve; });
  const worker = new Worker(queueName, async (job) => {
    seen.push({ id: job.id, name: job.name, data: job.data });
    if (seen.length >= wanted) resolveAll();
    return { documents: job.data.documents.length };
  }, { connection });
  await Promise.race([all, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  console.log(JSON.stringify(seen));
  // close() waits out the worker's blocking read; the jobs are finished, so exit now (as listen does).
  await new Promise((resolve) => setTimeout(resolve, 200));
  process.exit(0);
}

async function states(queue) {
  const out = {};
  for (const id of args[0].split(',')) {
    const job = await queue.getJob(id);
    out[id] = job ? await job.getState() : null;
  }
  console.log(JSON.stringify(out));
}

const queue = new Queue(queueName, { connection });
try {
  if (command === 'add') await add(queue);
  else if (command === 'listen') await listen();
  else if (command === 'inspect') await inspect(queue);
  else if (command === 'workers') await workers(queue);
  else if (command === 'consume') await consume();
  else if (command === 'states') await states(queue);
  else if (command === 'ispaused') console.log(JSON.stringify(await queue.isPaused()));
  else throw new Error(`unknown command ${command}`);
} finally {
  await queue.close();
}
