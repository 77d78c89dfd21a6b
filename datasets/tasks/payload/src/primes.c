#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000, count = 0;
    char *sieve = calloc(n + 1, 1);
    for (long i = 2; i <= n; i++) {
        if (sieve[i]) continue;
        count++;
        for (long j = i * i; j <= n; j += i) sieve[j] = 1;
    }
    printf("%ld primes below %ld\n", count, n);
    free(sieve);
    return 0;
}
