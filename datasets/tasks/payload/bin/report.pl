#!/usr/bin/perl
# Word and line statistics over a text file: the 'perl text processing' task.
use strict; use warnings;
my ($file, $top) = (@ARGV, 10);
open(my $fh, '<', $file) or die "$file: $!";
my (%count, $lines);
while (my $line = <$fh>) { $lines++; $count{lc $1}++ while $line =~ /([A-Za-z]{3,})/g; }
printf "%d lines, %d distinct words\n", $lines, scalar keys %count;
my @top = (sort { $count{$b} <=> $count{$a} || $a cmp $b } keys %count)[0 .. $top - 1];
printf "%6d %s\n", $count{$_}, $_ for grep { defined } @top;
