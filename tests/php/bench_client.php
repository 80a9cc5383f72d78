<?php
// PHP GearmanClient (C libgearman) side of bench/client_bench.py.
// Usage: php bench_client.php HOST:PORT FUNCTION JOBS INFLIGHT PAYLOAD_SIZE
// Submits JOBS foreground jobs, INFLIGHT at a time (addTask x INFLIGHT, then runTasks),
// checks every result, prints "<seconds> <cpu seconds> <correct results>".
[$_, $server, $function, $jobs, $inflight, $size] = $argv;
$jobs = (int)$jobs; $inflight = (int)$inflight;
$client = new GearmanClient();
$client->addServers($server);
$ok = 0;
// The expected result travels as the task's context (libgearman makes up a unique id per task).
$client->setCompleteCallback(function (GearmanTask $task, $expected) use (&$ok) {
    if ($task->data() === $expected) { $ok++; }
});
$ru0 = getrusage();
$t0 = microtime(true);
for ($done = 0; $done < $jobs; $done += $inflight) {
    for ($i = $done; $i < min($jobs, $done + $inflight); $i++) {
        $payload = str_pad("job-$i|", (int)$size, 'x');
        $client->addTask($function, $payload, $payload);
    }
    $client->runTasks();
}
$elapsed = microtime(true) - $t0;
$ru1 = getrusage();
$cpu = ($ru1['ru_utime.tv_sec'] + $ru1['ru_utime.tv_usec'] / 1e6 + $ru1['ru_stime.tv_sec'] + $ru1['ru_stime.tv_usec'] / 1e6)
     - ($ru0['ru_utime.tv_sec'] + $ru0['ru_utime.tv_usec'] / 1e6 + $ru0['ru_stime.tv_sec'] + $ru0['ru_stime.tv_usec'] / 1e6);
printf("%.6f %.6f %d\n", $elapsed, $cpu, $ok);
