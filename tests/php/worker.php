<?php
// A php-gearman (libgearman) worker for the client tests: a worker nobody here wrote.
// Usage: php worker.php SERVERS [PREFIX [RECORD_FILE]]
//   SERVERS: "host:port[,host:port...]"; every function is registered as PREFIX.name
//   (default prefix "php"); php.record appends its workloads to RECORD_FILE.
// Exits on SIGTERM (the worker polls so it can notice signals).

$servers = $argv[1] ?? '127.0.0.1:4730';
$prefix = $argv[2] ?? 'php';
$record = $argv[3] ?? '/dev/null';

$functions = [
    // The workload, unchanged (binary safe).
    'echo' => function (GearmanJob $job) { return $job->workload(); },
    // Sleeps 0-5 ms at random so that concurrent jobs finish out of order.
    'shuffle' => function (GearmanJob $job) {
        usleep(random_int(0, 5000));
        return strrev($job->workload());
    },
    // WORK_STATUS, WORK_DATA and WORK_WARNING, then the result.
    'progress' => function (GearmanJob $job) {
        $job->sendStatus(1, 3);
        $job->sendData('data-1');
        $job->sendWarning('warning-1');
        $job->sendStatus(3, 3);
        return 'done:' . $job->workload();
    },
    // Sleeps the number of seconds in the workload (a float).
    'sleep' => function (GearmanJob $job) {
        $seconds = (float)$job->workload();
        $steps = max(1, (int)ceil($seconds * 10));
        for ($i = 1; $i <= $steps; $i++) {
            usleep((int)($seconds * 1000000 / $steps));
            $job->sendStatus($i, $steps);
        }
        return 'slept ' . $job->workload();
    },
    // Sleeps 300 ms, then returns 16 random bytes (hex): equal results mean one coalesced job.
    'random' => function (GearmanJob $job) {
        usleep(300000);
        return bin2hex(random_bytes(16));
    },
    // Appends the workload and a newline to RECORD_FILE: the order jobs ran in.
    'record' => function (GearmanJob $job) use ($record) {
        file_put_contents($record, $job->workload() . "\n", FILE_APPEND);
        return 'ok';
    },
    // WORK_FAIL with no message.
    'fail' => function (GearmanJob $job) {
        $job->sendFail();
        return null;
    },
    // gearworker's failure convention: WORK_WARNING("Type: message") then WORK_FAIL.
    'warnfail' => function (GearmanJob $job) {
        $job->sendWarning('ValueError: bad input ' . $job->workload());
        $job->sendFail();
        return null;
    },
    // WORK_EXCEPTION with a message.
    'exception' => function (GearmanJob $job) {
        $job->sendException('boom: ' . $job->workload());
        return null;
    },
];

$worker = new GearmanWorker();
$worker->addServers($servers);
foreach ($functions as $name => $fn) {
    $worker->addFunction("$prefix.$name", $fn);
}
$worker->addOptions(GEARMAN_WORKER_NON_BLOCKING);
$worker->setTimeout(100);
pcntl_async_signals(true);
$running = true;
pcntl_signal(SIGTERM, function () use (&$running) { $running = false; });
while ($running) {
    if (@$worker->work()) {
        continue;
    }
    $ret = $worker->returnCode();
    if ($ret == GEARMAN_IO_WAIT || $ret == GEARMAN_NO_JOBS || $ret == GEARMAN_TIMEOUT) {
        @$worker->wait();
        continue;
    }
    if ($ret != GEARMAN_SUCCESS) {
        usleep(100000); // server gone: libgearman reconnects on the next call
    }
}
