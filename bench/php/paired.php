<?php
// Lone jobs for two functions served by two workers on one gearmand, alternated job by job.
// Usage: php paired.php SERVERS FUNCTION_A FUNCTION_B PAIRS [WARMUP] [GAP_US]
// Pairs run A then B, then B then A (so neither always follows the other), GAP_US apart.
// Prints one JSON line: {"a": [...], "b": [...]} (microseconds per job, after WARMUP untimed pairs).
[$_, $servers, $fa, $fb, $pairs, $warmup, $gap] = $argv + [null, '127.0.0.1:4730', 'noop', 'php_noop', 2000, 100, 0];
$client = new GearmanClient();
$client->addServers($servers);
$client->setTimeout(30000);
$samples = ['a' => [], 'b' => []];
for ($i = 0; $i < $warmup + $pairs; $i++) {
    foreach ($i % 2 ? ['b' => $fb, 'a' => $fa] : ['a' => $fa, 'b' => $fb] as $which => $function) {
        if ($gap > 0) {
            usleep((int) $gap);
        }
        $t = hrtime(true);
        $client->doNormal($function, 'x');
        if ($client->returnCode() != GEARMAN_SUCCESS) {
            fwrite(STDERR, "paired.php: " . $client->error() . "\n");
            exit(1);
        }
        if ($i >= $warmup) {
            $samples[$which][] = (hrtime(true) - $t) / 1000;
        }
    }
}
echo json_encode($samples), "\n";
