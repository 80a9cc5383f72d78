<?php
// Load generator: a PHP GearmanClient (C libgearman) keeping IN_FLIGHT foreground jobs queued.
// Usage: php load.php SERVERS FUNCTION PAYLOAD_BYTES IN_FLIGHT SECONDS
// Each round adds IN_FLIGHT tasks and runs them to completion (runTasks pipelines the
// SUBMIT_JOBs and collects results as they come).  Prints one JSON line:
// {"jobs": N, "seconds": S, "bad": B} where bad counts results that differ from the payload.
[$_, $servers, $function, $bytes, $inflight, $seconds] = $argv + [null, '127.0.0.1:4730', 'echo', 100, 500, 3];
$payload = str_repeat('x', (int)$bytes);
$client = new GearmanClient();
$client->addServers($servers);
$client->setTimeout(60000);
$bad = 0;
$done = 0;
$client->setCompleteCallback(function (GearmanTask $task) use (&$done, &$bad, $payload, $function) {
    $done++;
    if ($function === 'echo' && $task->data() !== $payload) {
        $bad++;
    }
});
$client->setFailCallback(function (GearmanTask $task) use (&$bad) { $bad++; });
$start = hrtime(true);
$deadline = $start + (int)($seconds * 1e9);
do {
    for ($i = 0; $i < $inflight; $i++) {
        $client->addTask($function, $payload);
    }
    if (!$client->runTasks()) {
        fwrite(STDERR, "load.php: " . $client->error() . "\n");
        exit(1);
    }
} while (hrtime(true) < $deadline);
$elapsed = (hrtime(true) - $start) / 1e9;
echo json_encode(['jobs' => $done, 'seconds' => $elapsed, 'bad' => $bad]), "\n";
