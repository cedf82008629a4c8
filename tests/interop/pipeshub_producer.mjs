// PipesHub's producer, as its code runs (pipeshub-ai 95d655b,
// backend/nodejs/apps/src/modules/crawling_manager/services/crawling_service.ts `scheduleJob` and
// `transformScheduleConfig`, utils/schedule_config_mapper.ts `buildCrawlingScheduleFromSync`), on the
// Node bullmq version the caller picks: `bullmq5` (5.56.1, PipesHub's lockfile: `queue.add(..., {repeat})`)
// or `bullmq` (6.x, where `repeat` on add is gone: the same schedule through `upsertJobScheduler`).
// Usage:
//   node pipeshub_producer.mjs <redisUrl> <queue> <package> schedule '<{connector, connectorId, orgId, userId, scheduleConfig, options?, everyMs?} or a list>'
//   node pipeshub_producer.mjs <redisUrl> <queue> <package> reconcile '<{connector, connectorId, orgId, ownerUserId, intervalMinutes, timezone?, everyMs?}>'
//   node pipeshub_producer.mjs <redisUrl> <queue> <package> add '<{name, data, opts}>'
//   node pipeshub_producer.mjs <redisUrl> <queue> <package> work '<{count, timeoutMs, name}>'   (a Node worker of that version)
//   node pipeshub_producer.mjs <redisUrl> <stream> - publish '<{orgId, connector, connectorId, now}>'
//     (SyncEventProducer.publishEvent + RedisStreamsProducer.publish: the sync event PipesHub's worker sends,
//      with Date.now() fixed to `now`; prints the entry id)
// `everyMs` replaces `intervalMinutes * 60000` so a test can watch several ticks (PipesHub's minimum is a minute).
const [redisUrl, queueName, pkg, command, rawArgs] = process.argv.slice(2);
const { Queue, Worker } = await import(pkg === '-' ? 'bullmq' : pkg);
const url = new URL(redisUrl);
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number((url.pathname || '/0').slice(1) || 0) };
const args = JSON.parse(rawArgs || '{}');
const legacyRepeat = pkg === 'bullmq5';

const buildJobId = (connector, connectorId, orgId) =>
  `crawl-${connector.toLowerCase().replace(/\s+/g, '-')}-${connectorId}-${orgId}`;
const buildJobName = (connector, connectorId) => `crawl-${connector.toLowerCase().replace(/\s+/g, '-')}-${connectorId}`;

function transformScheduleConfig(scheduleConfig, everyMs) {
  const { scheduleType, timezone = 'UTC' } = scheduleConfig;
  switch (scheduleType) {
    case 'hourly': return { pattern: `${scheduleConfig.minute} */${scheduleConfig.interval || 1} * * *`, tz: timezone };
    case 'daily': return { pattern: `${scheduleConfig.minute} ${scheduleConfig.hour} * * *`, tz: timezone };
    case 'weekly': return { pattern: `${scheduleConfig.minute} ${scheduleConfig.hour} * * ${scheduleConfig.daysOfWeek.join(',')}`, tz: timezone };
    case 'monthly': return { pattern: `${scheduleConfig.minute} ${scheduleConfig.hour} ${scheduleConfig.dayOfMonth} * *`, tz: timezone };
    case 'custom': return { pattern: scheduleConfig.cronExpression, tz: timezone };
    case 'interval': {
      const inner = scheduleConfig.scheduleConfig;
      const intervalMinutes = Number(inner?.intervalMinutes);
      if (!Number.isFinite(intervalMinutes) || intervalMinutes < 1) throw new Error('intervalMinutes must be a positive integer');
      return { every: everyMs ?? Math.floor(intervalMinutes) * 60 * 1000, tz: inner?.timezone ?? timezone };
    }
    case 'once': return undefined;
    default: throw new Error('Invalid schedule type');
  }
}

async function scheduleJob(queue, { connector, connectorId, scheduleConfig, orgId, userId, options = {}, everyMs }) {
  const jobId = buildJobId(connector, connectorId, orgId);
  const jobData = { connector, connectorId, scheduleConfig, orgId, userId, timestamp: new Date(), metadata: options.metadata };
  const jobOptions = {
    priority: options.priority || 5,
    attempts: options.maxRetries || 3,
    removeOnComplete: 10,
    removeOnFail: 10,
  };
  const name = buildJobName(connector, connectorId);
  if (scheduleConfig.scheduleType === 'once') {
    const delay = new Date(scheduleConfig.scheduleConfig.scheduledTime).getTime() - Date.now();
    if (delay <= 0) throw new Error('Scheduled time must be in the future');
    jobOptions.delay = delay;
    jobOptions.jobId = jobId;
    const job = await queue.add(name, jobData, jobOptions);
    return { jobId: job.id, name, repeat: null };
  }
  const repeat = transformScheduleConfig(scheduleConfig, everyMs);
  if (legacyRepeat) {
    const job = await queue.add(name, jobData, { ...jobOptions, repeat });
    return { jobId: job.id, name, repeat };
  }
  const job = await queue.upsertJobScheduler(jobId, repeat, { name, data: jobData, opts: jobOptions });
  return { jobId: job.id, name, repeat };
}

function buildCrawlingScheduleFromSync({ intervalMinutes, timezone, ownerUserId }) {
  const owner = /^[0-9a-f]{24}$/i.test(ownerUserId) ? ownerUserId.toLowerCase() : '000000000000000000000000';
  return {
    scheduleType: 'interval',
    isEnabled: true,
    createdBy: owner,
    lastUpdatedBy: owner,
    scheduleConfig: { intervalMinutes: Math.floor(intervalMinutes), timezone: timezone && timezone.trim().length ? timezone : 'UTC' },
  };
}

async function work({ count, timeoutMs = 20000, name = 'node-oracle' }) {
  const seen = [];
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  const worker = new Worker(queueName, async (job) => {
    seen.push(job.id);
    if (seen.length >= count) done();
    return { ok: true };
  }, { connection, name });
  await Promise.race([all, new Promise((resolve) => setTimeout(resolve, timeoutMs))]);
  await new Promise((resolve) => setTimeout(resolve, 300)); // let the last completion land
  console.log(JSON.stringify(seen));
  process.exit(0);
}

// utils/utils.ts constructSyncConnectorEvent, sync_events.service.ts publishEvent, redis-streams.service.ts publish
async function publish({ orgId, connector, connectorId, now }) {
  const { Redis } = await import('ioredis');
  const eventType = connector.replace(' ', '').toLowerCase() + '.resync';
  const payload = {
    orgId, origin: 'CONNECTOR', connector, connectorId,
    createdAtTimestamp: now.toString(), updatedAtTimestamp: now.toString(), sourceCreatedAtTimestamp: now.toString(),
  };
  const event = { eventType, timestamp: now, payload };
  const message = { key: event.eventType, value: JSON.stringify(event), headers: { eventType: event.eventType, timestamp: event.timestamp.toString() } };
  const serialized = message.value && typeof message.value === 'object' ? JSON.stringify(message.value) : JSON.stringify(message.value);
  const redis = new Redis(connection);
  const id = await redis.xadd(queueName, 'MAXLEN', '~', '500000', '*', 'key', message.key, 'value', serialized, 'headers', JSON.stringify(message.headers));
  await redis.quit();
  return id;
}

if (command === 'publish') {
  console.log(JSON.stringify(await publish(args)));
  process.exit(0);
}

const queue = new Queue(queueName, {
  connection,
  defaultJobOptions: { removeOnComplete: 10, removeOnFail: 10, attempts: 3, backoff: { type: 'exponential', delay: 5000 } },
});
try {
  if (command === 'schedule') {
    const out = [];
    for (const one of Array.isArray(args) ? args : [args]) out.push(await scheduleJob(queue, one));
    console.log(JSON.stringify(Array.isArray(args) ? out : out[0]));
  }
  else if (command === 'reconcile') {
    const scheduleConfig = buildCrawlingScheduleFromSync(args);
    console.log(JSON.stringify(await scheduleJob(queue, { ...args, userId: args.ownerUserId, scheduleConfig })));
  } else if (command === 'add') {  // a plain queue.add, e.g. with repeat options PipesHub does not set itself
    const job = await queue.add(args.name, args.data, args.opts);
    console.log(JSON.stringify({ jobId: job.id, name: args.name }));
  } else if (command === 'work') await work(args);
  else throw new Error(`unknown command ${command}`);
} finally {
  await queue.close();
}
