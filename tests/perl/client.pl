#!/usr/bin/perl
# A Perl Gearman::Client (libgearman-client-perl: the protocol written in Perl, no libgearman) for
# the interop tests: a client nobody here wrote.
# Usage:
#   perl client.pl SERVERS do FUNC            workload on stdin; the result on stdout; each
#                                             WORK_STATUS as "status N/D" and each WORK_WARNING as
#                                             "warning TEXT" on stderr; a failed job: "failed" on
#                                             stderr, exit 3
#   perl client.pl SERVERS many FUNC N        N jobs at once in one task set, workloads "job-I-xI";
#                                             prints "I<TAB>RESULT" per job as each ends
#   perl client.pl SERVERS bg FUNC UNIQ PRIO  a background job (PRIO: high, normal or low);
#                                             prints its handle
use strict;
use warnings;
use Gearman::Client;

my ($servers, $mode, $func, @rest) = @ARGV;
my $client = Gearman::Client->new(job_servers => [split /,/, $servers]);
binmode STDOUT;
binmode STDIN;
$| = 1;

if ($mode eq "do") {
    my $workload = do { local $/; <STDIN> };
    my $failed = 0;
    my $result = $client->do_task(
        $func, $workload,
        {
            on_status  => sub { print STDERR "status $_[0]/$_[1]\n" },
            on_warning => sub { print STDERR "warning ${$_[0]}\n" },
            on_fail    => sub { $failed = 1 },
            timeout    => 60,
        }
    );
    if ($failed || !defined $result) {
        print STDERR "failed\n";
        exit 3;
    }
    print ${$result};
}
elsif ($mode eq "many") {
    my ($count) = @rest;
    my $taskset = $client->new_task_set;
    for my $i (1 .. $count) {
        my $workload = "job-$i-" . ("x" x $i);
        $taskset->add_task(
            $func, $workload,
            {
                on_complete => sub { print "$i\t${$_[0]}\n" },
                on_fail     => sub { print "$i\tFAILED\n" },
            }
        );
    }
    $taskset->wait(timeout => 60);
}
elsif ($mode eq "bg") {
    my ($uniq, $priority) = @rest;
    my $handle = $client->dispatch_background($func, "bg:$uniq", { uniq => $uniq, priority => $priority });
    defined $handle or die "no handle for $func\n";
    print "$handle\n";
}
else {
    die "unknown mode $mode\n";
}
