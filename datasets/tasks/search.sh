# Search text: grep through documentation and sources, find files.
words="license copyright warranty debian python gcc error config"
set -- $words
i=$(( SEED % 8 + 1 )); eval w=\${$i}
grep -ril "$w" /usr/share/doc 2>/dev/null | head -100 >/dev/null || true
grep -rn "$w" /etc 2>/dev/null | head -50 >/dev/null || true
find /usr/lib/python3* -name "*$(echo $w | cut -c1-3)*" 2>/dev/null | head -50 >/dev/null || true
zgrep -c "$w" /usr/share/doc/*/changelog.Debian.gz 2>/dev/null | head -50 >/dev/null || true
