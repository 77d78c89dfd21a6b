# Compile and run C programs with gcc.
cd /tmp
srcs="primes wordfreq matrix"
set -- $srcs
i=$(( SEED % 3 + 1 )); eval prog=\${$i}
gcc -O2 -o "$prog" "/home/user/src/$prog.c" -lm
case $prog in
  primes) ./primes $((100000 + SEED * 50000)) ;;
  wordfreq) ./wordfreq < /usr/share/common-licenses/GPL-3 ;;
  matrix) ./matrix $((80 + SEED * 10 % 80)) ;;
esac >/dev/null
gcc -O0 -Wall -c -o extra.o /home/user/src/primes.c
