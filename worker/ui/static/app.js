// crawl-worker dashboard: live updates from /ui/events (BullMQ's events stream as server-sent events).
// Pages are complete without this file; it only keeps states and progress bars current.
// Everything it writes goes through textContent or a <progress> value: job data never becomes markup.
(function () {
  'use strict';
  var url = document.body.getAttribute('data-events');
  if (!url || !window.EventSource) { return; }
  var live = document.getElementById('live');

  function each(attr, id, fn) {
    var nodes = document.querySelectorAll('[' + attr + ']');
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute(attr) === id) { fn(nodes[i]); }
    }
  }

  function setProgress(id, pct) {
    if (typeof pct !== 'number') { return; }
    each('data-progress-of', id, function (el) { el.value = pct; el.textContent = Math.round(pct) + ' %'; });
    each('data-percent-of', id, function (el) { el.textContent = Math.round(pct) + ' %'; });
  }

  function setState(id, state) {
    each('data-state-of', id, function (el) {
      el.textContent = state;
      el.className = 'state state-' + state;
    });
  }

  var source = new EventSource(url);
  source.onopen = function () { if (live) { live.hidden = false; live.textContent = 'live'; live.className = 'live'; } };
  source.onerror = function () { if (live) { live.textContent = 'reconnecting'; live.className = 'live off'; } };
  source.onmessage = function (msg) {
    var m;
    try { m = JSON.parse(msg.data); } catch (e) { return; }
    if (m.event === 'paused' || m.event === 'resumed') {
      var q = document.querySelector('[data-queue-paused]');
      if (q) { q.textContent = m.paused ? 'paused' : 'running'; }
      return;
    }
    if (typeof m.jobId !== 'string') { return; }
    if (typeof m.state === 'string') { setState(m.jobId, m.state); }
    setProgress(m.jobId, m.progress);
  };
}());
