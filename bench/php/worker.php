<?php
// The baseline users run today: one PHP GearmanWorker (C libgearman), one job at a time.
// Usage: php worker.php SERVERS [PREFIX]
//   echo: returns the workload unchanged; noop: returns nothing.
//   PREFIX goes before both names (bench.paired runs this worker and ours on one gearmand).
// Blocking work() loop, the way PHP workers are usually written; the driver ends it with SIGKILL.
$worker = new GearmanWorker();
$worker->addServers($argv[1] ?? '127.0.0.1:4730');
$prefix = $argv[2] ?? '';
$worker->addFunction($prefix . 'echo', function (GearmanJob $job) { return $job->workload(); });
$worker->addFunction($prefix . 'noop', function (GearmanJob $job) { return ''; });
while ($worker->work() || $worker->returnCode() == GEARMAN_IO_WAIT) {
}
fwrite(STDERR, "worker.php: " . $worker->error() . "\n");
exit(1);
