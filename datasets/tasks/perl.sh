# Text processing with a Perl script.
f=/usr/share/common-licenses/$(echo "GPL-3 GPL-2 LGPL-2.1 Apache-2.0 Artistic" | cut -d' ' -f$((SEED % 5 + 1)))
perl /home/user/bin/report.pl "$f" $((5 + SEED % 10)) >/dev/null
perl -MList::Util=sum -e 'print sum(1..1000), "\n"' >/dev/null
