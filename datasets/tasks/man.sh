# Read manual pages (man-db, groff).
pages="ls grep bash find tar sed gzip cp"
set -- $pages
i=$(( SEED % 8 + 1 )); eval p=\${$i}
j=$(( (SEED + 3) % 8 + 1 )); eval q=\${$j}
MANPAGER=cat man "$p" >/dev/null 2>&1 || true
MANPAGER=cat man "$q" >/dev/null 2>&1 || true
man -k "$p" >/dev/null 2>&1 || true
