// bull-board's own API handlers (npm @bull-board/api, pinned) pointed at one queue, without a web server.
// Usage: node bull_board.mjs <redisUrl> <queue> <jobId>
//   -> prints {job, status, logs, workers} exactly as bull-board's routes answer them
//      (GET /api/queues/:queue/:jobId, .../:jobId/logs, .../workers).
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { Queue } from 'bullmq';

const [redisUrl, queueName, jobId] = process.argv.slice(2);
const url = new URL(redisUrl);
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number((url.pathname || '/0').slice(1) || 0) };

// The smallest server adapter: it keeps what createBullBoard hands to Express, Fastify and the others.
const captured = { routes: [], queues: null, uiConfig: {} };
const serverAdapter = {
  setQueues(queues) { captured.queues = queues; return this; },
  setViewsPath() { return this; },
  setStaticPath() { return this; },
  setEntryRoute() { return this; },
  setErrorHandler() { return this; },
  setApiRoutes(routes) { captured.routes = routes; return this; },
  setUIConfig(config) { captured.uiConfig = config; return this; },
};

const queue = new Queue(queueName, { connection });
createBullBoard({ queues: [new BullMQAdapter(queue)], serverAdapter });

async function call(route, params) {
  const found = captured.routes.find((r) => (Array.isArray(r.route) ? r.route : [r.route]).includes(route));
  if (!found) throw new Error(`bull-board has no route ${route}`);
  const res = await found.handler({
    queues: captured.queues, uiConfig: captured.uiConfig, query: {}, params, body: {}, headers: {},
  });
  if (res.status && res.status !== 200) throw new Error(`${route}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const detail = await call('/api/queues/:queueName/:jobId', { queueName, jobId });
const logs = await call('/api/queues/:queueName/:jobId/logs', { queueName, jobId });
const workers = await call('/api/queues/:queueName/workers', { queueName });
console.log(JSON.stringify({ job: detail.job, status: detail.status, logs, workers: workers.workers }));
await queue.close();
process.exit(0);
