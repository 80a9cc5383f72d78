<?php
// The baseline users run today: one PHP GearmanWorker (C libgearman), one job at a time.
// Usage: php worker.php SERVERS
//   echo: returns the workload unchanged; noop: returns nothing.
// Blocking work() loop, the way PHP workers are usually written; the driver ends it with SIGKILL.
$worker = new GearmanWorker();
$worker->addServers($argv[1] ?? '127.0.0.1:4730');
$worker->addFunction('echo', function (GearmanJob $job) { return $job->workload(); });
$worker->addFunction('noop', function (GearmanJob $job) { return ''; });
while ($worker->work() || $worker->returnCode() == GEARMAN_IO_WAIT) {
}
fwrite(STDERR, "worker.php: " . $worker->error() . "\n");
exit(1);
