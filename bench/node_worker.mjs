// A Node BullMQ Worker with a no-op processor (npm bullmq pinned in tests/interop/package-lock.json).
// Usage: node bench/node_worker.mjs REDIS_URL QUEUE CONCURRENCY ; runs until SIGTERM.
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/interop/package.json', import.meta.url));
const { Worker } = require('bullmq');
const IORedis = require('ioredis');

const [url, queue, concurrency] = process.argv.slice(2);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const worker = new Worker(queue, async () => null, { connection, prefix: 'bull', concurrency: Number(concurrency) });
process.on('SIGTERM', async () => {
  await worker.close();
  await connection.quit();
  process.exit(0);
});
