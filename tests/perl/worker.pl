#!/usr/bin/perl
# A Perl Gearman::Worker (libgearman-client-perl: the protocol written in Perl, no libgearman) for
# the interop tests: a worker nobody here wrote.
# Usage: perl worker.pl SERVERS     SERVERS: "host:port[,host:port...]"
# Functions: perl.echo (the workload unchanged), perl.reverse, perl.progress (WORK_STATUS 1/2 and
# 2/2, then "done:WORKLOAD"), perl.undef (returns undef: WORK_FAIL), perl.die (dies: Gearman::Worker
# sends WORK_EXCEPTION with the frozen message, then WORK_FAIL).  Exits on SIGTERM.
use strict;
use warnings;
use Gearman::Worker;

$SIG{TERM} = sub { exit 0 };
my $worker = Gearman::Worker->new(job_servers => [split /,/, $ARGV[0]]);
$worker->register_function("perl.echo" => sub { $_[0]->arg });
$worker->register_function("perl.reverse" => sub { scalar reverse $_[0]->arg });
$worker->register_function(
    "perl.progress" => sub {
        my $job = shift;
        $job->set_status(1, 2);
        $job->set_status(2, 2);
        return "done:" . $job->arg;
    }
);
$worker->register_function("perl.undef" => sub { undef });
$worker->register_function("perl.die" => sub { die "perl died: " . $_[0]->arg . "\n" });
$worker->work while 1;
