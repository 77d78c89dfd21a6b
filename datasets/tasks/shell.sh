# Log in and look around: a login shell, coreutils, procps, the usual files.
pick() { echo $(( (SEED * 7919 + $1) % $2 )); }
bash -lc 'id; uname -a; cat /etc/os-release; ls -la /etc | head -40' >/dev/null
case $(pick 1 3) in
  0) ls -R /usr/share/zoneinfo 2>/dev/null | head -200; df -h /; du -sh /var/lib 2>/dev/null ;;
  1) ps aux; free; uptime; cat /proc/cpuinfo | head -20 ;;
  2) find /etc -name '*.conf' | head -50; stat /etc/passwd; date ;;
esac >/dev/null
head -$((20 + SEED % 30)) /etc/login.defs >/dev/null
