<?php
// Latency of one foreground job at a time: doNormal in a loop, each call timed.
// Usage: php latency.php SERVERS FUNCTION COUNT [WARMUP] [GAP_US]
// GAP_US: a pause before each job, so that each starts on an idle machine (default 0: back to back).
// Prints one JSON line: {"samples_us": [...]} (one per job, after WARMUP untimed jobs).
[$_, $servers, $function, $count, $warmup, $gap] = $argv + [null, '127.0.0.1:4730', 'noop', 2000, 200, 0];
$client = new GearmanClient();
$client->addServers($servers);
$client->setTimeout(30000);
$samples = [];
for ($i = 0; $i < $warmup + $count; $i++) {
    if ($gap > 0) {
        usleep((int) $gap);
    }
    $t = hrtime(true);
    $client->doNormal($function, 'x');
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "latency.php: " . $client->error() . "\n");
        exit(1);
    }
    if ($i >= $warmup) {
        $samples[] = (hrtime(true) - $t) / 1000;
    }
}
echo json_encode(['samples_us' => $samples]), "\n";
